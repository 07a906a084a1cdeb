"""Request maxima: bounded JSON parsing and the range / GPU checks, pure (no gRPC)."""

from __future__ import annotations

import json

import pytest
from smf.common.errors import FailedPrecondition, InvalidArgument
from smf.common.limits import MAX_JSON_DEPTH, check_gpus, check_range, json_depth, parse_json


def test_parse_json_returns_the_value():
    assert parse_json('{"a": [1, {"b": "[[[{"}]}', field="config_json") == {"a": [1, {"b": "[[[{"}]}
    assert parse_json(b"[1, 2]", field="config_uri") == [1, 2]
    assert parse_json("3", field="x") == 3


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ("[]", 1), ('{"a": [1, {"b": "[["}]}', 3), ('["\\"[[[", []]', 2), ("[" * 10 + "]" * 10, 10)],
)
def test_json_depth_ignores_brackets_in_strings(text, depth):
    assert json_depth(text) == depth


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a": ' * 20_000 + "1" + "}" * 20_000, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)],
)
def test_deep_json_is_invalid_argument_not_recursion_error(text):
    if text.count("[") > 1000 or text.count("{") > 1000:
        with pytest.raises(RecursionError):  # what the servers hit before: answered INTERNAL
            json.loads(text)
    with pytest.raises(InvalidArgument) as err:
        parse_json(text, field="config_json")
    assert err.value.field == "config_json"
    assert f"at most {MAX_JSON_DEPTH}" in err.value.message


def test_the_deepest_allowed_json_parses():
    text = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(text) == MAX_JSON_DEPTH
    parse_json(text, field="config_json")


def test_size_bad_json_and_bad_utf8_name_the_field():
    with pytest.raises(InvalidArgument, match=r"config_json: 31 bytes of JSON; at most 30"):
        parse_json(json.dumps({"pad": "x" * 20}), field="config_json", max_bytes=30)
    with pytest.raises(InvalidArgument, match="config_json: not valid JSON"):
        parse_json("{not json", field="config_json")
    with pytest.raises(InvalidArgument, match="config_uri: not valid JSON: not UTF-8"):
        parse_json(b"\xff\xfe{}", field="config_uri")
    # an unterminated string is not a string to the depth scan: what follows it counts (the safe side)
    with pytest.raises(InvalidArgument, match="config_json: JSON nested 5000 levels"):
        parse_json('"' + "[" * 5000, field="config_json")


def test_check_range():
    check_range(4, field="hidden", low=1, high=8, integer=True)
    check_range(0.5, field="tfr", low=0, high=1)
    for value in (9, 0, True, "4", None, 1.5):
        with pytest.raises(InvalidArgument) as err:
            check_range(value, field="hidden", low=1, high=8, integer=True)
        assert err.value.field == "hidden", value


def test_check_gpus():
    assert check_gpus(0, max_gpus=8, available=0) == 0
    assert check_gpus(2, max_gpus=8, available=None) == 2  # a cluster backend: only the server's maximum applies
    with pytest.raises(InvalidArgument, match="gpus: must be >= 0"):
        check_gpus(-1)
    with pytest.raises(InvalidArgument, match="gpus: at most 8 per run"):
        check_gpus(9, max_gpus=8, available=16)
    with pytest.raises(FailedPrecondition, match="gpus: 3 asked, this server's host has 0 GPU"):
        check_gpus(3, max_gpus=8, available=0)
