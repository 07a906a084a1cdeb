"""Conditioning arrays: the parameter gestures an RNN plays, as `[N, C]` / `[B, N, C]` float arrays in [0, 1].

The original SMF built these in notebooks (MakeConditioningArray, MakeConditioningParamFiles); this is the same as a
library. A gesture is described on a nominal time line of `POINTS` points (the original "1000 points per nominal
second") and is played over an explicit duration by `stretch`, which up-samples it to the audio rate with linear
interpolation and a float rate (the original's integer `--external_sr` cut or slowed 3 s / 7 s gestures):

    pitch = glide([0.2, 0.8, 0.2])                          # 1000 points up and back down
    inst = ramp(1.0, 0.0)
    arr = columns(pitch, inst)                              # [1000, 2], columns in the model's param order
    check_array(arr, ["normPitch", "instID"])               # InvalidArgument naming the expected params
    per_sample = stretch(arr, 10.5, 16000)                  # [1, 168000, 2]

Column specs (`parse_column("glide:0.2,0.8,0.2")`) give the CLI (`smf conditioning make`) the same generators.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Sequence

import numpy as np
from smf.common.errors import InvalidArgument
from smf.common.files import atomic_write

POINTS = 1000  # points per nominal second of gesture, as in the original notebooks


# --- one-column generators: each returns float32 [n] ---------------------------------------------------------


def constant(value: float, n: int = POINTS) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


def ramp(start: float, end: float, n: int = POINTS) -> np.ndarray:
    """Linear ramp from start to end over n points (both ends included)."""
    return np.linspace(start, end, n, dtype=np.float32)


def glide(values: Sequence[float], n: int = POINTS, times: Sequence[float] | None = None) -> np.ndarray:
    """Piecewise-linear glide through `values`, at equally spaced breakpoints unless `times` (in [0, 1], one per
    value, increasing) says where each one falls on the gesture."""
    if len(values) < 2:
        raise InvalidArgument("glide", f"needs at least 2 values, got {len(values)}")
    t = np.linspace(0, 1, len(values)) if times is None else np.asarray(times, dtype=np.float64)
    if len(t) != len(values) or np.any(np.diff(t) < 0):
        raise InvalidArgument("glide.times", "needs one increasing time in [0, 1] per value")
    return np.interp(np.linspace(0, 1, n), t, values).astype(np.float32)


def bump(center: float = 0.5, width: float = 0.1, low: float = 0.0, high: float = 1.0, n: int = POINTS) -> np.ndarray:
    """Gaussian bump from `low` up to `high` at `center` (fraction of the gesture), std `width` (fraction)."""
    if width <= 0:
        raise InvalidArgument("bump.width", f"must be > 0, got {width}")
    t = np.linspace(0, 1, n)
    return (low + (high - low) * np.exp(-0.5 * ((t - center) / width) ** 2)).astype(np.float32)


def staircase(levels: Sequence[float], n: int = POINTS) -> np.ndarray:
    """Hold each level for an equal share of the n points (the notebooks' `step` / `spread`)."""
    if not levels:
        raise InvalidArgument("staircase", "needs at least one level")
    idx = np.minimum((np.arange(n) * len(levels)) // n, len(levels) - 1)
    return np.asarray(levels, dtype=np.float32)[idx]


def steps(k: int, n: int = POINTS) -> np.ndarray:
    """A k-level staircase 0 .. 1 (like the grid's `envPt`)."""
    return staircase(np.linspace(0, 1, k).tolist(), n)


def note_sequence(midi: Sequence[float], low: float, high: float, n: int = POINTS) -> np.ndarray:
    """MIDI notes, each held for an equal share, normalised to [0, 1] over [low, high] (the notebooks'
    `normedNoteSeq`; e.g. low 56, high 76 for the NSynth pitch range the SMF models were trained on)."""
    if high <= low:
        raise InvalidArgument("notes", f"high ({high}) must be above low ({low})")
    bad = [m for m in midi if not low <= m <= high]
    if bad:
        raise InvalidArgument("notes", f"MIDI notes {bad} outside [{low}, {high}]")
    return staircase([(m - low) / (high - low) for m in midi], n)


# --- whole arrays ---------------------------------------------------------------------------------------------


def columns(*cols: np.ndarray) -> np.ndarray:
    """Stack equal-length 1-D columns into [N, C] (column order = the model's param order)."""
    lengths = {len(c) for c in cols}
    if len(lengths) != 1:
        raise InvalidArgument("columns", f"all columns need the same length, got {sorted(lengths)}")
    return np.stack(cols, axis=1).astype(np.float32)


def constant_batch(values_per_param: Sequence[Sequence[float]]) -> np.ndarray:
    """Every combination of the given values, one voice each, held constant: [B, 2, C] with B = prod(len(v)).

    The last parameter varies fastest: constant_batch([[0, 1], [0, .5, 1]]) -> voices (0,0) (0,.5) (0,1) (1,0) ...
    (the notebooks' MakeConditioningParamFiles grids, e.g. 13 pitches x 11 instrument values, as one batch)."""
    combos = np.asarray(list(itertools.product(*values_per_param)), dtype=np.float32)  # [B, C]
    return np.repeat(combos[:, None, :], 2, axis=1)


def path_array(
    cells: Sequence[Sequence[float]],
    duration: float,
    *,
    points_per_second: float = POINTS,
    d0: int | None = None,
    d1: int | None = None,
    glide_cells: bool = False,
) -> np.ndarray:
    """An auditioner path (ordered grid cells) as a [N, 2] (dim0, dim1) array lasting `duration` nominal seconds.

    Cells are (dim0, dim1) pairs, normalised to [0, 1]; with `d0`/`d1` given they are integer cell indices (j, i) and
    are normalised as the grid's .params do (j/(d0-1), i/(d1-1)). Each cell is held for an equal share of the time,
    as the auditioner plays them; `glide_cells` glides linearly from one cell to the next instead."""
    if not cells:
        raise InvalidArgument("cells", "path has no cells")
    if duration <= 0:
        raise InvalidArgument("duration", f"must be > 0, got {duration}")
    pts = np.asarray(cells, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InvalidArgument("cells", f"expected a list of (dim0, dim1) pairs, got shape {list(pts.shape)}")
    if d0 is not None or d1 is not None:
        pts = pts / [max((d0 or 2) - 1, 1), max((d1 or 2) - 1, 1)]
    if pts.min() < 0 or pts.max() > 1:
        raise InvalidArgument("cells", "cell coordinates must lie in [0, 1] (or give d0/d1 for integer indices)")
    n = max(2, round(duration * points_per_second))
    if glide_cells and len(pts) > 1:
        return columns(glide(pts[:, 0], n), glide(pts[:, 1], n))
    return columns(staircase(pts[:, 0].tolist(), n), staircase(pts[:, 1].tolist(), n))


def read_path(source: str | bytes | os.PathLike) -> dict:
    """Read an auditioner path export: JSON `{"cells": [[dim0, dim1], ...], "duration": s, "d0"?: int, "d1"?: int}`
    or a bare list of cells."""
    if isinstance(source, bytes):
        data = json.loads(source)
    else:
        with open(source) as f:
            data = json.load(f)
    return {"cells": data} if isinstance(data, list) else data


# --- checking and playing -------------------------------------------------------------------------------------


def check_array(array: np.ndarray, param_names: Sequence[str], *, field: str = "conditioning") -> np.ndarray:
    """Validate a conditioning array for a model with `param_names`; return it as float32 [B, N, C].

    Wrong rank or column count, NaN/inf and values outside [0, 1] raise InvalidArgument naming the expected params
    (a .npy carries no column names, so the error has to say what the columns mean)."""
    names = list(param_names)
    expect = f"expected columns {names} (C={len(names)})"
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InvalidArgument(field, f"must be [N, C] or [B, N, C], got shape {list(np.shape(array))}; {expect}")
    if a.shape[2] != len(names):
        raise InvalidArgument(field, f"has {a.shape[2]} columns, {expect}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise InvalidArgument(field, f"is empty (shape {list(a.shape)}); {expect}")
    if not np.issubdtype(a.dtype, np.number):
        raise InvalidArgument(field, f"must be numeric, got dtype {a.dtype}; {expect}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise InvalidArgument(field, f"contains NaN or inf; {expect}, values in [0, 1]")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        bad = [names[c] for c in range(len(names)) if a[..., c].min() < 0 or a[..., c].max() > 1]
        raise InvalidArgument(field, f"values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] in columns {bad}; {expect}")
    return a


def stretch_length(duration: float, sample_rate: float) -> int:
    return round(duration * sample_rate)


def stretch(array: np.ndarray, duration: float, sample_rate: float) -> np.ndarray:
    """Play an N-point array over `duration` seconds: [B, N, C] (or [N, C]) -> [B, round(duration*sr), C].

    Point k sits at time k * duration / N (the array's rate is N/duration points per second, a float), output
    sample m at m / sr; values in between are linear interpolations and the last point is held to the end, exactly
    the original up-sampling but without its integer-rate error. N = 1 means a constant."""
    if duration <= 0:
        raise InvalidArgument("duration", f"must be > 0, got {duration}")
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    N = a.shape[1]
    T = stretch_length(duration, sample_rate)
    if T < 1:
        raise InvalidArgument("duration", f"{duration} s at {sample_rate} Hz is less than one sample")
    pos = np.arange(T, dtype=np.float64) * (N / (duration * sample_rate))  # position on the array's index axis
    pos = np.minimum(pos, N - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, N - 1)
    w = (pos - i0).astype(np.float32)[None, :, None]
    return a[:, i0, :] * (1 - w) + a[:, i1, :] * w


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a .npy atomically (`smf.common.files.atomic_write`)."""
    with atomic_write(path) as f:
        np.save(f, np.asarray(array, dtype=np.float32))


def array_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32))
    return buf.getvalue()


def load_array(source: str | bytes | os.PathLike, *, field: str = "conditioning") -> np.ndarray:
    """Read a .npy from a path or bytes; never unpickles (object arrays are refused)."""
    try:
        if isinstance(source, bytes):
            return np.load(io.BytesIO(source), allow_pickle=False)
        return np.load(source, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidArgument(field, f"not a readable .npy array: {exc}") from exc


# --- column specs for the CLI ---------------------------------------------------------------------------------

_SPEC_HELP = (
    "const:V | ramp:A,B | glide:A,B,C... | bump:CENTER,WIDTH[,LOW,HIGH] | steps:A,B,C... (staircase) | "
    "notes:M1,M2,...@LOW-HIGH (MIDI)"
)


def parse_column(spec: str, n: int = POINTS) -> np.ndarray:
    """One column from a spec string (see _SPEC_HELP), e.g. "glide:0.2,0.8,0.2" or "notes:60,64,67@56-76"."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "notes":
            notes, _, rng = rest.partition("@")
            low, _, high = rng.partition("-")
            return note_sequence([float(v) for v in notes.split(",")], float(low or 56), float(high or 76), n)
        vals = [float(v) for v in rest.split(",")] if rest else []
        if kind == "const" and len(vals) == 1:
            return constant(vals[0], n)
        if kind == "ramp" and len(vals) == 2:
            return ramp(vals[0], vals[1], n)
        if kind == "glide":
            return glide(vals, n)
        if kind == "bump" and len(vals) in (2, 4):
            return bump(*vals, n=n)
        if kind == "steps":
            return staircase(vals, n)
    except ValueError as exc:
        raise InvalidArgument("column", f"{spec!r}: {exc}; expected {_SPEC_HELP}") from exc
    raise InvalidArgument("column", f"{spec!r} is not a column spec; expected {_SPEC_HELP}")
