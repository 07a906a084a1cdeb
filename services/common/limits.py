"""Request maxima: JSON parsed within a size and a depth, and the bounds servers put on counts a request asks for.

    cfg = parse_json(request.config_json, field="config_json")          # InvalidArgument("config_json", ...) if
                                                                          # not JSON, over 1 MiB or nested past 64
    check_range(request.steps, field="steps", low=1, high=MAX_STEPS)     # InvalidArgument naming "steps"
    check_gpus(request.gpus, max_gpus=8, available=0)                    # FailedPrecondition: this host has none

Servers call these on what a caller sends; the CLIs, acting with the user's own rights, need not. Every refusal
names the request field, so a caller sees what to change instead of INTERNAL.
"""

from __future__ import annotations

import json
import re

from smf.common.errors import FailedPrecondition, InvalidArgument

__all__ = ["MAX_GPUS", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "check_gpus", "check_range", "json_depth", "parse_json"]

MAX_JSON_BYTES = 1 << 20  # a config is a few KiB; 1 MiB is generous and still cheap to scan
MAX_JSON_DEPTH = 64  # the deepest shipped config nests 3 levels; Python's parser recurses once per level
MAX_GPUS = 8  # GPUs one training run may ask of a server, unless the operator sets --max-gpus

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string, escapes included: brackets in it do not nest
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON text nest (0 for a scalar), found without recursion.

    json_depth('{"a": [1, {"b": "[["}]}') == 3
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for c in brackets:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(
    text: str | bytes, *, field: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> object:
    """The value of JSON text from a request, or InvalidArgument naming `field`: not UTF-8, not JSON, larger than
    `max_bytes`, or nested deeper than `max_depth` (checked before parsing: the standard parser recurses per level
    and a page of '[' is a RecursionError)."""
    size = len(text.encode("utf-8", errors="surrogatepass")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise InvalidArgument(field, f"{size} bytes of JSON; at most {max_bytes} are accepted")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(field, f"not valid JSON: not UTF-8 ({exc})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise InvalidArgument(field, f"JSON nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(field, f"not valid JSON: {exc}") from None
    except RecursionError:  # json_depth counts at least the parser's nesting; kept so no text can be INTERNAL
        raise InvalidArgument(field, f"JSON nested too deeply; at most {max_depth} levels are accepted") from None


def check_range(value: object, *, field: str, low: int | float, high: int | float, integer: bool = False) -> None:
    """InvalidArgument naming `field` unless `value` is a number (an int when `integer`; never a bool) in
    [low, high]."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "an integer" if integer else "a number"
        raise InvalidArgument(field, f"must be {what} in {low}..{high}, got {value!r:.40}")
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be in {low}..{high}, got {value}")


def check_gpus(gpus: int, *, max_gpus: int = MAX_GPUS, available: int | None = None) -> int:
    """`gpus` of a training request, checked: InvalidArgument when negative or above the server's `max_gpus`;
    FailedPrecondition when above what the host has (`available`, None where a cluster decides, e.g. Kubernetes)."""
    if gpus < 0:
        raise InvalidArgument("gpus", f"must be >= 0, got {gpus}")
    if gpus > max_gpus:
        raise InvalidArgument("gpus", f"at most {max_gpus} per run on this server, got {gpus}")
    if available is not None and gpus > available:
        raise FailedPrecondition(
            f"gpus: {gpus} asked, this server's host has {available} GPU(s); ask for at most {available} "
            "(0 trains on the CPU)"
        )
    return gpus
