"""paramManager-compatible `.params` files: read, write, sample, and the 2D4pt grid-cell parameters.

A `.params` file is the JSON that lonce/paramManager writes beside each wav (indent 4, no trailing newline):

    {"meta": {"filename": "x.wav", ...},
     "<name>": {"times": [...], "values": [...], "units": "norm", "nvals": 0, "minval": 0, "maxval": 1,
                "origMinval": null, "origUnits": null, "origMaxval": null}, ...}

Values are normalised to [0, 1]; the physical range lives in origUnits/origMinval/origMaxval. Usage:

    pf = read_params("foo.params")
    rate = sample_param(pf.params["rate"], np.linspace(0, 2.0, 100))
    write_params("bar.params", grid_cell_params("bar.wav", i=0, j=3, d0=21, d1=21, duration=1.49))

Files written by the seed tools are accepted as they are: `"minval": "null"` strings (read as None), missing
optional fields (paramManager's defaults), integer times, extra meta keys and extra per-param keys (kept, and written
back on round trip). The one normalisation on round trip: the string "null" comes back as JSON null.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from smf.common.errors import InvalidArgument
from smf.common.files import atomic_write

# paramManager's pdict.addParam writes the fields in this order (origMinval before origUnits); keeping it makes our
# files byte-identical to the seed tool's for the same content.
_FIELDS = ("times", "values", "units", "nvals", "minval", "maxval", "origMinval", "origUnits", "origMaxval")

# Slack for values that should be in [0, 1] but went through float arithmetic (e.g. j / (d0 - 1) sums).
_RANGE_EPS = 1e-9


def _number_list(xs: Iterable[Any]) -> list[float]:
    """A plain list of Python numbers (ints stay ints, so a file's `[0, 10]` is written back as `[0, 10]`)."""
    if isinstance(xs, np.ndarray):
        return xs.tolist()
    return [x.item() if isinstance(x, np.generic) else x for x in xs]


@dataclass
class Param:
    """One parameter track: a polyline of (time in seconds, normalised value) plus paramManager's descriptors."""

    times: list[float]
    values: list[float]
    units: str | None = "norm"
    nvals: int = 0  # number of discrete levels; 0 = continuous
    minval: float | None = 0
    maxval: float | None = 1
    orig_units: str | None = None
    orig_minval: float | None = None
    orig_maxval: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown per-param keys, written back unchanged

    def __post_init__(self) -> None:
        self.times = _number_list(self.times)
        self.values = _number_list(self.values)


@dataclass
class ParamFile:
    """The contents of one `.params` file. `meta` holds the meta keys other than `filename`."""

    filename: str
    params: dict[str, Param] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------- reading


def read_params(source: str | os.PathLike | bytes, *, name: str | None = None) -> ParamFile:
    """Parse a `.params` file from a path, a JSON string or bytes. `name` labels errors (e.g. the store key).

    Raises InvalidArgument(<file>, reason) for unreadable JSON or a malformed entry, naming the param at fault.
    """
    if isinstance(source, bytes):
        label, text = name or "<params bytes>", source.decode("utf-8", errors="replace")
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        label, text = name or "<params json>", source
    else:
        label = name or os.fspath(source)
        try:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise InvalidArgument(label, f"cannot read params file: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(label, f"not valid JSON: {exc}") from exc
    return _from_dict(doc, label)


def _from_dict(doc: Any, label: str) -> ParamFile:
    if not isinstance(doc, dict):
        raise InvalidArgument(label, "a .params file must be a JSON object")
    meta = doc.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("filename"), str):
        raise InvalidArgument(label, 'missing "meta": {"filename": "<audio file name>"}')
    meta = dict(meta)
    filename = meta.pop("filename")
    params = {key: _param_from_dict(value, label, key) for key, value in doc.items() if key != "meta"}
    return ParamFile(filename=filename, params=params, meta=meta)


def _param_from_dict(d: Any, label: str, pname: str) -> Param:
    if not isinstance(d, dict):
        raise InvalidArgument(label, f"param {pname!r}: expected an object with times and values")
    for key in ("times", "values"):
        xs = d.get(key)
        if not isinstance(xs, list):
            raise InvalidArgument(label, f"param {pname!r}: {key!r} must be a list of numbers")
        for x in xs:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise InvalidArgument(label, f"param {pname!r}: {key!r} holds a non-number {x!r}")
    units = d.get("units")
    if units is not None and not isinstance(units, str):
        raise InvalidArgument(label, f"param {pname!r}: units must be a string or null, got {units!r}")
    orig_units = d.get("origUnits")
    if orig_units is not None and not isinstance(orig_units, str):
        orig_units = str(orig_units)
    nvals = _optional_number(d.get("nvals", 0), label, pname, "nvals")
    if nvals is None:
        nvals = 0
    if nvals != int(nvals) or nvals < 0:
        raise InvalidArgument(label, f"param {pname!r}: nvals must be a non-negative integer, got {nvals!r}")
    return Param(
        times=d["times"],
        values=d["values"],
        units=units,
        nvals=int(nvals),
        minval=_optional_number(d.get("minval", 0), label, pname, "minval"),
        maxval=_optional_number(d.get("maxval", 1), label, pname, "maxval"),
        orig_units=orig_units,
        orig_minval=_optional_number(d.get("origMinval"), label, pname, "origMinval"),
        orig_maxval=_optional_number(d.get("origMaxval"), label, pname, "origMaxval"),
        extra={k: v for k, v in d.items() if k not in _FIELDS},
    )


def _optional_number(x: Any, label: str, pname: str, key: str) -> float | None:
    """A number, or None for JSON null and the seed tools' string 'null' (2D4pt.py writes minval='null')."""
    if x is None:
        return None
    if isinstance(x, str):
        text = x.strip()
        if text.lower() in ("null", "none", ""):
            return None
        try:
            return float(text)
        except ValueError:
            raise InvalidArgument(label, f"param {pname!r}: {key} must be a number or null, got {x!r}") from None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InvalidArgument(label, f"param {pname!r}: {key} must be a number or null, got {x!r}")
    return x


# ---------------------------------------------------------------------------------------------------------- writing


def _param_to_dict(p: Param) -> dict[str, Any]:
    d = {
        "times": _number_list(p.times),
        "values": _number_list(p.values),
        "units": p.units,
        "nvals": int(p.nvals),
        "minval": p.minval,
        "maxval": p.maxval,
        "origMinval": p.orig_minval,
        "origUnits": p.orig_units,
        "origMaxval": p.orig_maxval,
    }
    d.update(p.extra)
    return d


def params_dict(pf: ParamFile) -> dict[str, Any]:
    """The JSON object of a ParamFile (meta first, then the params in their order)."""
    doc: dict[str, Any] = {"meta": {"filename": pf.filename, **pf.meta}}
    for pname, p in pf.params.items():
        if pname == "meta":
            raise InvalidArgument("meta", "a parameter cannot be called 'meta'")
        doc[pname] = _param_to_dict(p)
    return doc


def params_json(pf: ParamFile) -> str:
    """paramManager's exact text: `json.dumps(pdict, indent=4)`, no trailing newline."""
    return json.dumps(params_dict(pf), indent=4)


def write_params(path: str | os.PathLike, pf: ParamFile) -> None:
    """Write `pf` to `path` atomically (temp file in the same folder, then rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path, "w") as fh:
        fh.write(params_json(pf))


# --------------------------------------------------------------------------------------------- building & sampling


def constant_param(value: float, duration: float, **kw: Any) -> Param:
    """A per-file constant: exactly two points [0, duration] (paramManager refuses fewer than two)."""
    return Param(times=[0.0, float(duration)], values=[float(value), float(value)], **kw)


def sample_param(param: Param, times: np.ndarray, *, clamp: bool = False) -> np.ndarray:
    """Values of `param` at `times` (seconds), paramManager's resampling semantics.

    Inside [times[0], times[-1]]: linear interpolation between breakpoints. Outside: linear *extrapolation* along the
    first / last segment, as paramManager's `interp1d(..., fill_value="extrapolate")` does, so a ramp keeps ramping past
    its last point. `clamp=True` instead holds the first / last value (what most callers want for normalised controls).
    """
    t = np.asarray(param.times, dtype=np.float64)
    v = np.asarray(param.values, dtype=np.float64)
    if len(t) != len(v) or len(t) < 2:
        raise InvalidArgument("times", f"a param needs >= 2 points and as many values as times, got {len(t)}/{len(v)}")
    if np.any(np.diff(t) <= 0):
        raise InvalidArgument("times", "param times must be strictly increasing")
    x = np.asarray(times, dtype=np.float64)
    out = np.interp(x, t, v)
    if not clamp:
        lo, hi = x < t[0], x > t[-1]
        if lo.any():
            out[lo] = v[0] + (x[lo] - t[0]) * (v[1] - v[0]) / (t[1] - t[0])
        if hi.any():
            out[hi] = v[-1] + (x[hi] - t[-1]) * (v[-1] - v[-2]) / (t[-1] - t[-2])
    return out


def resample_param(
    param: Param, n: int, t0: float | None = None, t1: float | None = None, *, clamp: bool = False
) -> Param:
    """`param` on n evenly spaced points over [t0, t1] (default: its own span), like paramManager.resampleParam."""
    if n < 2:
        raise InvalidArgument("n", f"must be >= 2, got {n}")
    t0 = param.times[0] if t0 is None else t0
    t1 = param.times[-1] if t1 is None else t1
    new_t = np.linspace(t0, t1, n)
    return Param(
        times=new_t.tolist(),
        values=sample_param(param, new_t, clamp=clamp).tolist(),
        units=param.units,
        nvals=param.nvals,
        minval=param.minval,
        maxval=param.maxval,
        orig_units=param.orig_units,
        orig_minval=param.orig_minval,
        orig_maxval=param.orig_maxval,
        extra=dict(param.extra),
    )


def envpt_param(duration: float) -> Param:
    """The 2D4pt `envPt` track: an 11-level staircase 0, 0.1, ..., 1.0 over the clip.

    Reproduces sonyGanFork's `makesteps(np.linspace(0, dur, 12), np.linspace(0, 1, 11))`: the clip is cut into 11
    equal segments of dur/11; segment k holds value k/10 and is written as two points (start, next start - 1e-6), so
    22 points: [0, d/11-1e-6, d/11, 2d/11-1e-6, ..., 10d/11, d-1e-6] with values [0, 0, .1, .1, ..., 1, 1]. Linear
    interpolation then gives a staircase whose risers last 1 microsecond.
    """
    edges = np.linspace(0, duration, 12, True)
    levels = np.linspace(0, 1, 11, True)
    times = np.stack([edges[:-1], edges[1:] - 0.000001], axis=1).reshape(-1)
    values = np.repeat(levels, 2)
    return Param(times=times.tolist(), values=values.tolist(), units=f"norm, duration in[0,{duration}]", nvals=0)


def grid_cell_params(filename: str, i: int, j: int, d0: int, d1: int, duration: float) -> ParamFile:
    """The `.params` of grid cell (row i along d1, column j along d0), as sonyGanFork's 2D4pt.py `--pm True` writes.

    dim0 = j/(d0-1) and dim1 = i/(d1-1) (dim1 only when d1 > 1) as constants over [0, duration], units
    "norm, interp steps in[0,<d>]", nvals d; envPt = the 11-step staircase (`envpt_param`). Departure from the
    original: minval/maxval are written as the numbers 0 and 1, not the string 'null'.
    """
    if d0 < 2:
        raise InvalidArgument("d0", f"must be >= 2, got {d0}")
    if d1 < 1:
        raise InvalidArgument("d1", f"must be >= 1, got {d1}")
    if not 0 <= j < d0:
        raise InvalidArgument("j", f"must be in [0, {d0 - 1}], got {j}")
    if not 0 <= i < d1:
        raise InvalidArgument("i", f"must be in [0, {d1 - 1}], got {i}")
    if not duration > 0:
        raise InvalidArgument("duration", f"must be > 0, got {duration}")
    params = {
        "dim0": Param(
            times=[0.0, duration], values=[j / (d0 - 1), j / (d0 - 1)], units=f"norm, interp steps in[0,{d0}]", nvals=d0
        )
    }
    if d1 > 1:
        params["dim1"] = Param(
            times=[0.0, duration], values=[i / (d1 - 1), i / (d1 - 1)], units=f"norm, interp steps in[0,{d1}]", nvals=d1
        )
    params["envPt"] = envpt_param(duration)
    return ParamFile(filename=filename, params=params)


# ------------------------------------------------------------------------------------------------------- validation


def validate_params(pf: ParamFile, required: Iterable[str] = (), *, source: str, all_params: bool = False) -> None:
    """Check that `pf` is usable as conditioning; raise InvalidArgument(source, ...) naming the param at fault.

    Every name in `required` must be present. The required params (every param with `all_params=True`) must have
    >= 2 points, as many values as times, finite strictly increasing times and finite values in [0, 1].
    """
    required = list(required)
    missing = [r for r in required if r not in pf.params]
    if missing:
        have = ", ".join(pf.params) or "none"
        raise InvalidArgument(source, f"missing param {missing[0]!r} (the file has: {have})")
    names = list(pf.params) if all_params else required
    for pname in names:
        p = pf.params[pname]
        if len(p.times) != len(p.values):
            raise InvalidArgument(source, f"param {pname!r}: {len(p.times)} times but {len(p.values)} values")
        if len(p.times) < 2:
            raise InvalidArgument(source, f"param {pname!r}: needs at least 2 points, has {len(p.times)}")
        if not all(math.isfinite(t) for t in p.times):
            raise InvalidArgument(source, f"param {pname!r}: times must be finite numbers")
        for k in range(1, len(p.times)):
            if p.times[k] <= p.times[k - 1]:
                raise InvalidArgument(
                    source, f"param {pname!r}: times not increasing at index {k} ({p.times[k - 1]} then {p.times[k]})"
                )
        for k, v in enumerate(p.values):
            if not (math.isfinite(v) and -_RANGE_EPS <= v <= 1 + _RANGE_EPS):
                raise InvalidArgument(source, f"param {pname!r}: value {v} at index {k} is outside [0, 1]")
