"""Fundamental frequency of a steady sound, and the pitch a normalised pitch param asks for.

    f0 = estimate_f0(audio[8000:], 16000)                  # Hz, or nan when nothing periodic is found
    hz = requested_hz(0.5, orig_minval=48, orig_maxval=72)  # normPitch 0.5 over MIDI 48..72 -> MIDI 60 -> 261.6 Hz
    cents(f0, hz)                                          # signed error in cents

Autocorrelation rather than pYIN: the sounds measured here are the synth's own steady renders (one pitch per
constant-knob render), where the normalised autocorrelation's first near-best peak is exact to well under a cent
and needs no extra dependency; the test checks it against known tones.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "F0_PARAM",
    "PITCH_PARAM",
    "cents",
    "pitch_param",
    "estimate_f0",
    "midi_to_hz",
    "pitch_range",
    "requested_hz",
]

PITCH_PARAM = "normPitch"  # paramManager's name of a pitch param; its origUnits say whether it is MIDI notes
F0_PARAM = "f0"  # the analysed fundamental (smf.rnn.features): octaves above F0_REF_HZ, normalised over the data
F0_REF_HZ = 20.0


def pitch_param(names) -> str | None:
    """The param a pitch oscillator follows among `names`: normPitch, else an analysed f0, else None."""
    return next((n for n in (PITCH_PARAM, F0_PARAM) if n in names), None)


def pitch_range(ranges: dict[str, dict], name: str = PITCH_PARAM) -> tuple[float, float] | None:
    """(low, high) MIDI notes that 0 and 1 of a pitch param name, from a dataset's physical ranges: normPitch when
    its units are MIDI notes, an analysed f0 in octaves above 20 Hz (both are linear in MIDI notes)."""
    r = ranges.get(name)
    if r is None:
        return None
    units = str(r.get("units") or "").lower()
    if "midi" in units:
        return float(r["min"]), float(r["max"])
    if name == F0_PARAM and units == "octaves":
        return tuple(69.0 + 12.0 * math.log2(F0_REF_HZ * 2.0 ** float(r[k]) / 440.0) for k in ("min", "max"))
    return None


def estimate_f0(x: np.ndarray, sr: int, fmin: float = 50.0, fmax: float = 1000.0) -> float:
    """f0 by normalised autocorrelation: the first lag whose correlation is within 10% of the best one (so a
    periodic signal's period wins over its multiples), refined by parabolic interpolation."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    n = len(x)
    lo, hi = max(int(sr / fmax), 2), min(int(sr / fmin), n - 2)
    if n < 4 or hi <= lo + 2 or not np.any(x):
        return float("nan")
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    ac = ac / (ac[0] + 1e-12) / (1 - np.arange(n) / n)  # normalised, unbiased
    seg = ac[lo:hi]
    peaks = [i for i in range(1, len(seg) - 1) if seg[i] >= seg[i - 1] and seg[i] >= seg[i + 1] and seg[i] > 0]
    if not peaks:
        return float("nan")
    best = max(seg[i] for i in peaks)
    k = next(i for i in peaks if seg[i] >= 0.9 * best)
    a, b, c = seg[k - 1], seg[k], seg[k + 1]
    den = a - 2 * b + c
    shift = 0.5 * (a - c) / den if den != 0 else 0.0
    return float(sr / (lo + k + shift))


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def requested_hz(value: float, *, orig_minval: float, orig_maxval: float) -> float:
    """The f0 a normalised pitch param value names, when its physical range is MIDI notes (paramManager's
    origMinval/origMaxval with origUnits like "midiPitch")."""
    return midi_to_hz(orig_minval + value * (orig_maxval - orig_minval))


def cents(measured_hz: float, target_hz: float) -> float:
    if not (measured_hz > 0 and target_hz > 0):
        return float("nan")
    return 1200.0 * math.log2(measured_hz / target_hz)
