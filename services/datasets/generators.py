"""The built-in synthetic datasets: small, deterministic sets of clips with known parameters.

Each generator yields `Clip`s (float32 mono audio in [-1, 1] + the `.params` that describe it); `make_dataset`
(smf.datasets.files) writes them to the store. Parameter values are spread over [0, 1] by a stratified design
(every stratum of [0, 1] gets one file), so a model trained on a set has seen the whole range:

    clips = list(generate("tones", n_files=8, seed=0, sample_rate=16000, duration=1.0))
    clips[0].name, clips[0].audio.shape, clips[0].params.params["normPitch"].values

- pops:  regular pops (a short noisy click exciting a decaying resonance) at `rate` pops per second, resonance `pitch`.
         rate: nvals 11, origUnits "rate pow(2,n), n=[2,5]" like the QuickStart pops (4 .. 32 pops/s);
         pitch: resonance as MIDI note 55 .. 103 (196 .. 3136 Hz).
- tones: steady harmonic notes. normPitch: MIDI 48 .. 72 in 25 semitone steps, f0 = 440 * 2**((48 + 24 v - 69) / 12)
         exactly; brightness: spectral tilt -18 .. -3 dB/octave (harmonic k has amplitude k ** (tilt / 6.02)).
- wind:  noise through a resonant low-pass whose `cutoff` (100 .. 6000 Hz, exponential) moves within the file along a
         5-point polyline: the set with time-varying params.
- soundfont: real instrument notes (GM piano, guitar, violin, flute x MIDI 48 .. 72) rendered by fluidsynth;
         normPitch + instID. Needs the Debian packages fluidsynth and timgm6mb-soundfont (smf.datasets.soundfont).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from smf.common.errors import InvalidArgument
from smf.common.params import Param, ParamFile, constant_param, sample_param

# Bump when a generator's output changes, so the manifest says which recipe made a stored set.
GENERATOR_VERSION = 1
PEAK = 0.5  # every clip is normalised to this peak: headroom for PCM_16 and for later mixing


@dataclass
class Clip:
    """One generated file: `name` is the stem (`<name>.wav`, `<name>.params`)."""

    name: str
    audio: np.ndarray  # float32 [T]
    params: ParamFile


def midi_to_hz(m: float | np.ndarray) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _stratified(rng: np.random.Generator, n: int) -> np.ndarray:
    """n values in [0, 1], one uniformly placed in each of the n equal strata, in random order (Latin hypercube)."""
    return (rng.permutation(n) + rng.uniform(size=n)) / n


def _levels(rng: np.random.Generator, n: int, nvals: int) -> np.ndarray:
    """n values on the nvals-level grid k/(nvals-1), spread evenly from 0 to 1 (both ends included), shuffled."""
    steps = np.round(np.linspace(0, nvals - 1, n)) if n > 1 else np.zeros(1)
    return rng.permutation(steps / (nvals - 1))


def _normalise(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio)))
    return (audio * (PEAK / peak) if peak > 0 else audio).astype(np.float32)


def _file_rng(seed: int, k: int) -> np.random.Generator:
    """Per-file randomness: file k is the same whatever else is generated alongside it."""
    return np.random.default_rng([seed, 1, k])


# ------------------------------------------------------------------------------------------------------------ pops

POP_MIDI = (55.0, 103.0)


def pops(n_files: int, *, seed: int, sample_rate: int, duration: float) -> Iterator[Clip]:
    design = np.random.default_rng([seed, 0])
    rates, pitches = _levels(design, n_files, 11), _stratified(design, n_files)
    n = round(duration * sample_rate)
    for k in range(n_files):
        rng = _file_rng(seed, k)
        rate_v, pitch_v = float(rates[k]), float(pitches[k])
        per_second = 2.0 ** (2 + 3 * rate_v)
        f_res = midi_to_hz(POP_MIDI[0] + (POP_MIDI[1] - POP_MIDI[0]) * pitch_v)
        # One pop: a 0.5 ms noise click plus a resonance decaying with time constant max(4 ms, 2 periods):
        # at most 10 ms, so even at 32 pops/s each pop has died to ~5 % before the next.
        tau = max(0.004, 10.0 / f_res / 5.0)
        t = np.arange(int(6 * tau * sample_rate)) / sample_rate
        audio = np.zeros(n + len(t))
        period = 1.0 / per_second
        for onset in np.arange(rng.uniform(0, period), duration, period):
            i = round(onset * sample_rate)
            click = rng.standard_normal(len(t)) * np.exp(-t / 0.0005)
            ring = np.sin(2 * np.pi * f_res * t) * np.exp(-t / tau)
            audio[i : i + len(t)] += rng.uniform(0.8, 1.0) * (ring + 0.3 * click)
        params = {
            "rate": constant_param(
                rate_v, duration, nvals=11, orig_units="rate pow(2,n), n=[2,5]", orig_minval=2, orig_maxval=5
            ),
            "pitch": constant_param(
                pitch_v,
                duration,
                orig_units="resonant frequency, midi note",
                orig_minval=POP_MIDI[0],
                orig_maxval=POP_MIDI[1],
            ),
        }
        name = f"pops_{k:03d}"
        yield Clip(name, _normalise(audio[:n]), ParamFile(f"{name}.wav", params))


# ----------------------------------------------------------------------------------------------------------- tones

TONE_MIDI = (48, 72)  # 25 semitones: normPitch has nvals 25
TILT_DB = (-18.0, -3.0)  # dB per octave at brightness 0 and 1


def tone_f0(norm_pitch: float) -> float:
    """The exact fundamental of a `tones` clip with this normPitch: MIDI 48 + 24 v."""
    return float(midi_to_hz(TONE_MIDI[0] + (TONE_MIDI[1] - TONE_MIDI[0]) * norm_pitch))


def tones(n_files: int, *, seed: int, sample_rate: int, duration: float) -> Iterator[Clip]:
    design = np.random.default_rng([seed, 0])
    nvals = TONE_MIDI[1] - TONE_MIDI[0] + 1
    pitches, brights = _levels(design, n_files, nvals), _stratified(design, n_files)
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    # 10 ms attack, 50 ms release (shorter for very short clips) so notes start and end without clicks
    attack, release = min(int(0.01 * sample_rate), n // 4), min(int(0.05 * sample_rate), n // 4)
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack, endpoint=False)
    if release:
        env[n - release :] = np.linspace(1, 0, release)
    for k in range(n_files):
        rng = _file_rng(seed, k)
        pitch_v, bright_v = float(pitches[k]), float(brights[k])
        f0 = tone_f0(pitch_v)
        tilt = TILT_DB[0] + (TILT_DB[1] - TILT_DB[0]) * bright_v
        # harmonics up to 0.45 * sample_rate: below Nyquist with margin, so nothing aliases
        h = np.arange(1, int(0.45 * sample_rate / f0) + 1)
        amp = h.astype(np.float64) ** (tilt / (20 * math.log10(2)))
        phase = rng.uniform(0, 2 * np.pi, size=len(h))
        audio = (amp[:, None] * np.sin(2 * np.pi * f0 * h[:, None] * t[None, :] + phase[:, None])).sum(0)
        params = {
            "normPitch": constant_param(
                pitch_v,
                duration,
                nvals=nvals,
                orig_units="midiPitch",
                orig_minval=TONE_MIDI[0],
                orig_maxval=TONE_MIDI[1],
            ),
            "brightness": constant_param(
                bright_v,
                duration,
                orig_units="spectral tilt, dB/octave",
                orig_minval=TILT_DB[0],
                orig_maxval=TILT_DB[1],
            ),
        }
        name = f"tones_{k:03d}"
        yield Clip(name, _normalise(audio * env), ParamFile(f"{name}.wav", params))


# ------------------------------------------------------------------------------------------------------------ wind

CUTOFF_HZ = (100.0, 6000.0)
WIND_POINTS = 5  # breakpoints of each file's cutoff polyline
WIND_Q = 1.5  # resonance at the cutoff: the whistle that makes filtered noise sound like wind


def cutoff_hz(v: float | np.ndarray) -> float | np.ndarray:
    """Normalised cutoff -> Hz, exponential: 100 * 60 ** v."""
    return CUTOFF_HZ[0] * (CUTOFF_HZ[1] / CUTOFF_HZ[0]) ** v


def wind(n_files: int, *, seed: int, sample_rate: int, duration: float) -> Iterator[Clip]:
    design = np.random.default_rng([seed, 0])
    # each breakpoint column is its own stratified draw, so starts, middles and ends all cover [0, 1]
    points = np.stack([_stratified(design, n_files) for _ in range(WIND_POINTS)], axis=1)
    n = round(duration * sample_rate)
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft, dtype=torch.float64)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    for k in range(n_files):
        rng = _file_rng(seed, k)
        cutoff = Param(
            times=np.linspace(0.0, duration, WIND_POINTS),
            values=points[k],
            orig_units=("low-pass cutoff, Hz (exponential: 100 * 60 ** v)"),
            orig_minval=CUTOFF_HZ[0],
            orig_maxval=CUTOFF_HZ[1],
        )
        noise = torch.from_numpy(rng.standard_normal(n))
        spec = torch.stft(noise, n_fft, hop, window=window, return_complex=True)  # [F, frames], centred frames
        fc = cutoff_hz(sample_param(cutoff, np.arange(spec.shape[1]) * hop / sample_rate, clamp=True))
        ratio = freqs[:, None] / fc[None, :]
        gain = 1.0 / np.sqrt((1 - ratio**2) ** 2 + (ratio / WIND_Q) ** 2)  # 2nd-order resonant low-pass magnitude
        audio = torch.istft(spec * torch.from_numpy(gain), n_fft, hop, window=window, length=n).numpy()
        name = f"wind_{k:03d}"
        yield Clip(name, _normalise(audio), ParamFile(f"{name}.wav", {"cutoff": cutoff}))


# --------------------------------------------------------------------------------------------------------- registry

# Imported here, not at the top: soundfont.py builds on Clip and _normalise above. Every import of this module goes
# through smf.datasets' __init__, which loads this module first, so the cycle always resolves in this order.
from smf.datasets.soundfont import PITCHES, PROGRAMS, soundfont  # noqa: E402

GeneratorFn = Callable[..., Iterator[Clip]]
GENERATORS: dict[str, GeneratorFn] = {"pops": pops, "tones": tones, "wind": wind, "soundfont": soundfont}
# (n_files, duration in seconds): small enough for tests and the demo, big enough to train a toy model on
DEFAULTS: dict[str, tuple[int, float]] = {
    "pops": (16, 2.0),
    "tones": (25, 1.0),
    "wind": (16, 2.0),
    "soundfont": (len(PROGRAMS) * len(PITCHES), 1.0),
}


def generate(
    name: str, *, n_files: int | None = None, seed: int = 0, sample_rate: int = 16000, duration: float | None = None
) -> Iterator[Clip]:
    """The clips of built-in dataset `name`; deterministic given (name, n_files, seed, sample_rate, duration)."""
    if name not in GENERATORS:
        raise InvalidArgument("name", f"unknown dataset {name!r}; built-in: {', '.join(GENERATORS)}")
    n_files = DEFAULTS[name][0] if n_files is None else int(n_files)
    duration = DEFAULTS[name][1] if duration is None else float(duration)
    if n_files < 1:
        raise InvalidArgument("n_files", f"must be >= 1, got {n_files}")
    if not 0.05 <= duration <= 600:
        raise InvalidArgument("duration", f"must be in [0.05, 600] seconds, got {duration}")
    if not 8000 <= sample_rate <= 192000:
        raise InvalidArgument("sample_rate", f"must be in [8000, 192000] Hz, got {sample_rate}")
    return GENERATORS[name](n_files, seed=seed, sample_rate=sample_rate, duration=duration)
