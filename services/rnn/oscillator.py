"""A pitch oscillator for an audio tier: the net also hears sin(k*phi) and cos(k*phi), k = 1..K, where phi is the
phase of the fundamental of the sample it is about to make.

Why: a sample-level RNN conditioned on normPitch alone has to count the period itself from the pitch value, and at
the sizes that train on a CPU it does not (the soundfont notes came out 107-614 cents off). The neural source-filter
models (Wang, Takaki & Yamagishi 2019) and DDSP (Engel et al. 2020) drive their nets with a sine at the wanted f0
instead, so the timing is given and the net only shapes it. Those nets are trained with spectral losses, where the
sine's phase does not matter; this tier is trained on the samples themselves (cross-entropy of the next mu-law
class), so the training phase must be the note's own:

- training: phi of each file is measured from its audio: heterodyne at the nominal f0 of its pitch param, average
  over two periods, take the angle; phi = nominal phase + that slowly moving offset (`measured_phase`). The pitch
  param is normPitch (its MIDI range from the .params' origMinval/origMaxval) or, for a tier without one, an
  analysed f0 control (smf.rnn.features, octaves above 20 Hz over the data's range; smf.rnn.pitch.pitch_range).
- generation: phi integrates the requested f0 sample by sample from 0 (`Oscillator`, carried across chunks of a
  live session), so the net makes the fundamental where the oscillator puts it: the pitch asked for.

    phase = measured_phase(audio, hz, 16000)                     # training, per file
    osc = oscillator_for(config)                                 # generation (TorchScript-able)
    cond_net, phase = osc(cond, phase)                           # cond [B, T, C] -> [B, T, C + 2K]

With the inputs in place a tier holds its pitch to a few cents (see docs/benchmarks.md); the timbre is still learnt.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from smf.common.errors import InvalidArgument
from torch import Tensor, nn

__all__ = [
    "MAX_HARMONICS",
    "NoOscillator",
    "Oscillator",
    "attach_phases",
    "auto_oscillator",
    "features",
    "measured_phase",
    "net_conditioning",
    "note_hz",
    "oscillator_for",
    "pitch_param_of",
    "require_oscillator",
]

MAX_HARMONICS = 8
AUTO_HARMONICS = 2  # what TrainConfig.oscillator None (auto) turns on: the soundfont notes' 1-13 cents took 2
TWO_PI = 2.0 * math.pi


def note_hz(norm: Tensor, lo: float, hi: float) -> Tensor:
    """normPitch values in [0, 1] over MIDI lo..hi -> Hz (same dtype)."""
    return 440.0 * torch.pow(2.0, (lo + norm * (hi - lo) - 69.0) / 12.0)


def features(phase: Tensor, harmonics: int) -> Tensor:
    """phase [...] (radians) -> [..., 2K] float32: sin(k phi) for k = 1..K, then cos(k phi)."""
    k = torch.arange(1, harmonics + 1, dtype=phase.dtype, device=phase.device)
    kp = phase.unsqueeze(-1) * k
    return torch.cat([torch.sin(kp), torch.cos(kp)], -1).to(torch.float32)


def measured_phase(audio: np.ndarray, hz: np.ndarray, sample_rate: int) -> np.ndarray:
    """The phase of a note's fundamental per sample (float64 [n], radians mod 2 pi): audio [n] float, hz [n] the
    nominal f0 at each sample. The audio is moved down by the nominal phase (complex heterodyne), averaged over two
    periods of the median f0 (a moving mean, centred), and the angle of that slowly turning phasor is added back."""
    x = np.asarray(audio, dtype=np.float64)
    hz = np.asarray(hz, dtype=np.float64)
    if x.ndim != 1 or hz.shape != x.shape:
        raise ValueError(f"audio and hz must be [n] alike, got {x.shape} and {hz.shape}")
    if len(x) == 0:
        return np.zeros(0)
    nominal = np.cumsum(TWO_PI * hz / sample_rate)
    z = x * np.exp(-1j * nominal)
    w = int(min(max(round(2 * sample_rate / float(np.median(hz))), 8), len(x)))
    c = np.concatenate([[0], np.cumsum(z)])  # a centred moving sum in O(n), whatever the file's length
    i = np.arange(len(x))
    zl = c[np.minimum(i - w // 2 + w, len(x))] - c[np.maximum(i - w // 2, 0)]
    offset = np.unwrap(np.angle(zl))
    return np.mod(nominal + offset, TWO_PI)


def net_conditioning(cond: Tensor, params: int, harmonics: int) -> Tensor:
    """Training windows' conditioning [..., n, params] (+ the phase column with an oscillator, see
    WindowDataset.windows) -> the input rows' [..., n - 1, params + 2K]: row t holds the params of step t and the
    oscillator at the phase of step t + 1, the sample row t predicts (generation's step t hears the phase of the
    sample it makes: the same pairing)."""
    rows = cond[..., :-1, :params]
    if not harmonics:
        return rows
    return torch.cat([rows, features(cond[..., 1:, params], harmonics)], -1)


def pitch_param_of(names) -> str:
    """The param an oscillator follows among `names` (smf.rnn.pitch.pitch_param), or the error naming `oscillator`."""
    from smf.rnn.pitch import pitch_param

    name = pitch_param(names)
    if name is None:
        raise InvalidArgument(
            "oscillator", f"a pitch oscillator follows normPitch or an analysed f0; add one to the props (got {names})"
        )
    return name


def attach_phases(data, config) -> None:
    """Measure every training file's phase (TrainFile.phase) at the f0 its pitch param names over config.pitch."""
    lo, hi = config.pitch
    p = config.pitch_column
    for i, f in enumerate(data.files):
        hz = note_hz(f.cond[:, p].to(torch.float64), lo, hi).numpy()
        f.phase = torch.from_numpy(measured_phase(data.audio(i), hz, config.sample_rate)).to(torch.float32)


def _settle(config, data, midi):
    """The config with its pitch range, made the dataset's (config, pitch), every file's phase measured."""
    from dataclasses import replace

    config = replace(config, pitch=[float(midi[0]), float(midi[1])])
    data.config, data.pitch = config, config.pitch
    attach_phases(data, config)
    return config


def require_oscillator(config, data):
    """A tier that asks for an oscillator (config.oscillator > 0): its pitch param's MIDI range (the config's, else
    the data's .params) and every file's phase -> the config with `pitch` set; errors name `oscillator`."""
    from smf.rnn.pitch import pitch_range

    name = pitch_param_of(config.param_names)
    midi = config.pitch if config.pitch is not None else pitch_range(data.ranges, name)
    if midi is None:
        raise InvalidArgument(
            "oscillator",
            f"the data's .params give no MIDI range for {name} (origUnits midiPitch, origMinval, origMaxval): the "
            "oscillator cannot tell which f0 a value names; set oscillator 0 or add them",
        )
    return _settle(config, data, midi)


def auto_oscillator(config, data):
    """TrainConfig.oscillator None (the default): an audio tier whose props hold normPitch, on data whose .params
    say which MIDI notes it spans, gets an oscillator of AUTO_HARMONICS (its phases measured here, the dataset's
    config updated); any other tier is returned as it is. -> the RNNConfig to build."""
    from dataclasses import replace

    from smf.rnn.pitch import PITCH_PARAM, pitch_range

    if not config.is_audio or config.oscillator or PITCH_PARAM not in config.param_names:
        return config
    midi = pitch_range(getattr(data, "ranges", {}))
    if midi is None:
        return config
    return _settle(replace(config, oscillator=AUTO_HARMONICS), data, midi)


class Oscillator(nn.Module):
    """Generation side: cond [B, T, C] (the params at each sample) and the carried phase [B] float64 (that of the
    last sample made, 0 at the start) -> (cond with 2K oscillator columns appended [B, T, C + 2K], new phase)."""

    def __init__(self, column: int, lo: float, hi: float, harmonics: int, sample_rate: int):
        super().__init__()
        self.column: int = column
        self.lo: float = float(lo)
        self.hi: float = float(hi)
        self.harmonics: int = harmonics
        self.sample_rate: float = float(sample_rate)
        self.two_pi: float = TWO_PI  # (TorchScript reads no module-level floats)

    def forward(self, cond: Tensor, phase: Tensor) -> tuple[Tensor, Tensor]:
        hz = note_hz(cond[:, :, self.column].to(torch.float64), self.lo, self.hi)
        phi = phase.to(torch.float64).unsqueeze(1) + torch.cumsum(hz * (self.two_pi / self.sample_rate), 1)
        phi = torch.remainder(phi, self.two_pi)
        last = phi[:, -1] if cond.shape[1] > 0 else phase.to(torch.float64)
        return torch.cat([cond.to(torch.float32), features(phi, self.harmonics)], -1), last


class NoOscillator(nn.Module):
    """A tier without an oscillator: the conditioning as it is (keeps generator modules one TorchScript type)."""

    def forward(self, cond: Tensor, phase: Tensor) -> tuple[Tensor, Tensor]:
        return cond, phase


def oscillator_for(config) -> nn.Module:
    """The Oscillator an RNNConfig asks for (config.oscillator harmonics over config.pitch), else NoOscillator."""
    if not config.oscillator:
        return NoOscillator()
    if config.pitch is None:
        raise InvalidArgument("pitch", "an oscillator tier needs its normPitch MIDI range (config.pitch = [lo, hi])")
    lo, hi = config.pitch
    return Oscillator(config.pitch_column, lo, hi, config.oscillator, config.sample_rate)
