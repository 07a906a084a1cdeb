"""Analysis controls computed from the audio: the trajectories a parameter tier learns to generate (MTCRNN's upper
tiers) and an audio tier can be conditioned on.

    raw = analyse(audio, 16000, rate=125)                 # {"rms": dB [n], "centroid": octaves [n]} at 125 Hz
    stats = fit_stats([raw, ...])                         # per name: min/max over the whole dataset
    params = to_params(raw, stats, 16000, rate=125)       # {"rms": Param, ...}: values in [0, 1]

The dataset loader calls these once, when it loads the files, and adds the resulting Params to each file's
.params (in memory), so the same validation, pre-sampling and windowing code serves recorded params and analysed
ones. Normalising over the dataset (not per file) keeps loud and soft files apart; the stats are written into the
run's checkpoint and manifest so a trajectory can be mapped back to dB / octaves.

Frames: a Hann-windowed STFT (window 2 x hop, centred) with hop = sample_rate / rate samples, so frame k describes
time k / rate exactly and a parameter tier at `rate` sees one frame per step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from smf.common.errors import InvalidArgument

MEL_BANDS = 8  # mel0 .. mel7: the spectral envelope at the frame rate, coarse enough for a small tier to predict
FEATURES = {"rms": "dB", "centroid": "octaves", "f0": "octaves"} | {f"mel{k}": "dB" for k in range(MEL_BANDS)}
F0_RANGE_HZ = (50.0, 1000.0)
F0_WINDOW_S = 0.032  # long enough for two periods of 60 Hz
MELS = [f"mel{k}" for k in range(MEL_BANDS)]
MEL_FMIN = 40.0
DEFAULT_RATE = 125  # frames per second when the tier itself runs at the audio rate (the reference's top tier rate)
RMS_FLOOR_DB = -80.0  # silence would be -inf dB; everything quieter is this
CENTROID_REF_HZ = 20.0  # octaves above 20 Hz; a silent frame (no centroid) counts as 20 Hz = 0 octaves


def is_feature(name: str) -> bool:
    return name in FEATURES


def hop_of(sample_rate: int, rate: int) -> int:
    hop = sample_rate / rate
    if rate <= 0 or hop != int(hop):
        raise InvalidArgument(
            "rate", f"the analysis rate must divide the sample rate {sample_rate} Hz (e.g. 125, 250, 500), got {rate}"
        )
    return int(hop)


def analyse(
    audio: np.ndarray | torch.Tensor, sample_rate: int, rate: int, names=tuple(FEATURES)
) -> dict[str, np.ndarray]:
    """Raw analysis tracks of a mono signal: one value per frame at times k / rate, k = 0 .. len(audio) // hop."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise InvalidArgument("features", f"unknown analysis features {unknown}; known: {sorted(FEATURES)}")
    hop = hop_of(sample_rate, rate)
    x = torch.as_tensor(audio, dtype=torch.float32).reshape(-1)
    n_fft = 2 * hop
    if len(x) <= n_fft // 2:  # reflect padding needs more samples than half a window
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - len(x)))
    spec = torch.stft(
        x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True
    ).abs()  # [F, frames]
    out = {}
    if "rms" in names:
        # Parseval over the Hann window: mean power of the windowed frame, corrected for the window's mean square
        power = (spec**2).sum(0) / (n_fft**2 * 0.375) * 2
        out["rms"] = np.maximum(10 * np.log10(power.double().numpy() + 1e-20), RMS_FLOOR_DB)
    if "centroid" in names:
        freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate)[:, None]
        centroid = (freqs * spec).sum(0) / spec.sum(0).clamp_min(1e-9)
        out["centroid"] = np.log2(np.maximum(centroid.double().numpy(), CENTROID_REF_HZ) / CENTROID_REF_HZ)
    if "f0" in names:
        out["f0"] = _f0_track(x, sample_rate, hop, spec.shape[1])
    if any(n in MELS for n in names):
        # band energies in dB on a mel scale: what a listener (and the control score's log-mel) tells sounds apart by
        fb = torchaudio_melscale(spec.shape[0], sample_rate)  # [F, MEL_BANDS]
        mel_db = 10 * torch.log10((fb.T @ spec**2).double() / (n_fft**2 * 0.375) * 2 + 1e-20)
        for k, n in enumerate(MELS):
            if n in names:
                out[n] = np.maximum(mel_db[k].numpy(), RMS_FLOOR_DB)
    return out


def _f0_track(x: torch.Tensor, sample_rate: int, hop: int, frames: int) -> np.ndarray:
    """f0 per frame (octaves above 20 Hz) from the normalised autocorrelation of a 32 ms Hann window centred on the
    frame: the best lag in the 50..1000 Hz range; an aperiodic frame (best correlation < 0.3) holds 0 (= 20 Hz)."""
    win = max(int(F0_WINDOW_S * sample_rate), 2 * int(sample_rate / F0_RANGE_HZ[0]) // 2 + 2)
    pad = torch.nn.functional.pad(x, (win // 2, win // 2 + hop * frames))
    seg = pad.unfold(0, win, hop)[:frames] * torch.hann_window(win)  # [frames, win]
    seg = seg - seg.mean(1, keepdim=True)
    spec = torch.fft.rfft(seg, 2 * win)
    ac = torch.fft.irfft(spec * spec.conj(), 2 * win)[:, :win]
    ac = ac / (ac[:, :1] + 1e-9) / (1 - torch.arange(win) / win)
    lo, hi = int(sample_rate / F0_RANGE_HZ[1]), min(int(sample_rate / F0_RANGE_HZ[0]), win - 1)
    best, lag = ac[:, lo:hi].max(1)
    hz = sample_rate / (lag + lo).double()
    octaves = np.log2(np.maximum(hz.numpy(), CENTROID_REF_HZ) / CENTROID_REF_HZ)
    return np.where(best.numpy() > 0.3, octaves, 0.0)


def torchaudio_melscale(n_freqs: int, sample_rate: int) -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.melscale_fbanks(
        n_freqs, MEL_FMIN, sample_rate / 2, MEL_BANDS, sample_rate, norm=None, mel_scale="htk"
    )


def fit_stats(tracks: list[dict[str, np.ndarray]]) -> dict[str, dict]:
    """Per feature, the min and max of its raw values over every file: the dataset's normalisation."""
    stats = {}
    for name in tracks[0] if tracks else []:
        lo = min(float(t[name].min()) for t in tracks)
        hi = max(float(t[name].max()) for t in tracks)
        stats[name] = {"min": lo, "max": hi, "unit": FEATURES[name]}
    return stats


def normalise(values: np.ndarray, stat: dict) -> np.ndarray:
    span = stat["max"] - stat["min"]
    if span <= 0:  # a constant feature over the whole dataset carries no information: mid-range
        return np.full_like(values, 0.5)
    return np.clip((values - stat["min"]) / span, 0.0, 1.0)


def denormalise(values: np.ndarray, stat: dict) -> np.ndarray:
    """[0, 1] -> dB / octaves (for reports and plots)."""
    return stat["min"] + np.asarray(values) * (stat["max"] - stat["min"])


def to_params(raw: dict[str, np.ndarray], stats: dict[str, dict], sample_rate: int, rate: int) -> dict:
    """Normalised analysis tracks as Params (one point per frame at k / rate) to add to a file's ParamFile."""
    from smf.common.params import Param

    out = {}
    for name, values in raw.items():
        v = normalise(values, stats[name])
        if len(v) < 2:  # a Param needs two points; a one-frame file holds its value
            v = np.repeat(v, 2)
        times = np.arange(len(v), dtype=np.float64) / rate
        out[name] = Param(
            times=times.tolist(),
            values=v.tolist(),
            units="norm",
            orig_units=FEATURES[name],
            orig_minval=stats[name]["min"],
            orig_maxval=stats[name]["max"],
            extra={"analysis": f"smf.rnn.features at {rate} Hz"},
        )
    return out


def feature_rate(config) -> int:
    """The analysis frame rate for a tier: its own step rate for a parameter tier, DEFAULT_RATE for the audio tier
    (its conditioning is interpolated to the sample times, as a chained parameter tier's output is)."""
    return config.step_rate if not config.is_audio else DEFAULT_RATE


def wanted(config) -> list[str]:
    """Analysis features the tier needs: the analysis names among its conditioning and generated params."""
    return [n for n in config.param_names + config.generate if is_feature(n)]


def check_stats(stats: dict) -> None:
    for name, s in stats.items():
        if not (math.isfinite(s["min"]) and math.isfinite(s["max"])):
            raise InvalidArgument("features", f"{name}: non-finite dataset range {s}")
