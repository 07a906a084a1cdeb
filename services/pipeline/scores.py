"""Objective scores between sets of sounds: multi-resolution STFT distance and a Fréchet distance on handcrafted
audio features, plus the features used to pick mutually distant corners.

    frechet_distance(frame_features(data), frame_features(samples))   # 0 = same feature distribution
    mrstft_distance(data, samples, sample_rate)                        # 0 = same average spectra
    clip_features(clips, sr)                                           # [n, F] one vector per clip (corners)
    farthest_four(clip_features(...))                                  # 4 indices, max of the min pairwise distance

The sets are unpaired (a GAN sample has no "true" data clip), so both scores compare distributions: the STFT
distance compares the sets' mean magnitude spectra at several resolutions (spectral convergence + log distance),
the Fréchet distance compares Gaussians fitted to per-frame features (log-mel bands, spectral centroid, loudness).
The matrix square root is computed with eigh on symmetric PSD matrices (no scipy needed).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torchaudio

__all__ = ["clip_features", "farthest_four", "frame_features", "frechet_distance", "mrstft_distance"]

N_MELS = 32
RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop) at 16 kHz: ~16, 32, 64 ms windows
EPS = 1e-7


def _batch(clips) -> list[torch.Tensor]:
    return [torch.as_tensor(np.asarray(c, dtype=np.float32)).reshape(-1) for c in clips]


def frame_features(clips, sample_rate: int, *, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Per-frame handcrafted features [frames, N_MELS + 2]: log-mel bands, log spectral centroid, loudness (dB)."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop, n_mels=N_MELS, power=2.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    window = torch.hann_window(n_fft)
    rows = []
    for x in _batch(clips):
        if len(x) < n_fft:
            x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
        power = torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().pow(2)  # [F, N]
        logmel = torch.log10(mel(x) + EPS)  # [M, N]
        centroid = (freqs[:, None] * power).sum(0) / (power.sum(0) + EPS)
        loud = 10 * torch.log10(power.mean(0) + EPS)
        rows.append(torch.cat([logmel, torch.log10(centroid + 1.0)[None], loud[None] / 10]).T)
    return torch.cat(rows).double().numpy()


def clip_features(clips, sample_rate: int) -> np.ndarray:
    """One vector per clip (mean and std of its frame features), standardised over the set: [n, 2F]."""
    feats = []
    for x in clips:
        f = frame_features([x], sample_rate)
        feats.append(np.concatenate([f.mean(0), f.std(0)]))
    f = np.stack(feats)
    return (f - f.mean(0)) / (f.std(0) + 1e-9)


def farthest_four(features: np.ndarray) -> list[int]:
    """The 4 clips whose smallest pairwise distance is largest (exhaustive for n <= 40, greedy above), ordered
    z0, z1, z2, z3 so that the grid's sides z0-z1 and z2-z3 are its two closest opposite pairs (no twisted quad)."""
    n = len(features)
    if n < 4:
        raise ValueError(f"need at least 4 clips to choose corners, got {n}")
    d = np.linalg.norm(features[:, None] - features[None], axis=-1)
    if n <= 40:
        best = max(
            itertools.combinations(range(n), 4),
            key=lambda c: (min(d[a, b] for a, b in itertools.combinations(c, 2)), sum(d[np.ix_(c, c)].flat)),
        )
    else:  # greedy farthest-point from the two most distant clips
        a, b = np.unravel_index(np.argmax(d), d.shape)
        best = [int(a), int(b)]
        while len(best) < 4:
            best.append(int(np.argmax(np.min(d[best], axis=0))))
    a, b, c, e = best
    # three ways to split 4 points into two rows; keep the one whose diagonals are the longest
    pairings = [((a, b), (c, e)), ((a, c), (b, e)), ((a, e), (b, c))]
    (z0, z1), (z2, z3) = min(pairings, key=lambda p: d[p[0]] + d[p[1]])
    if d[z0, z2] + d[z1, z3] > d[z0, z3] + d[z1, z2]:  # keep z0 above z2 and z1 above z3 (sides, not diagonals)
        z2, z3 = z3, z2
    return [int(z0), int(z1), int(z2), int(z3)]


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a and b:
    |mu_a - mu_b|^2 + tr(Sa) + tr(Sb) - 2 tr((Sa^1/2 Sb Sa^1/2)^1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(sa)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sb @ root_a), 0, None)).sum()
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross, 0.0))


def _mean_spectrum(clips, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft)
    total, frames = torch.zeros(n_fft // 2 + 1, dtype=torch.float64), 0
    for x in _batch(clips):
        if len(x) < n_fft:
            x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
        mag = torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().double()
        total += mag.sum(1)
        frames += mag.shape[1]
    return total / max(frames, 1)


def mrstft_distance(reference, clips, sample_rate: int = 16000) -> float:
    """Multi-resolution STFT distance between two sets of clips: per resolution, spectral convergence
    ||A - B|| / ||A|| plus mean |log A - log B| of the sets' mean magnitude spectra, averaged over resolutions
    (windows scaled with the sample rate)."""
    scale = sample_rate / 16000
    out = []
    for n_fft, hop in RESOLUTIONS:
        n_fft, hop = max(int(n_fft * scale), 64), max(int(hop * scale), 16)
        a, b = _mean_spectrum(reference, n_fft, hop), _mean_spectrum(clips, n_fft, hop)
        sc = torch.linalg.norm(a - b) / (torch.linalg.norm(a) + EPS)
        logd = (torch.log(a + EPS) - torch.log(b + EPS)).abs().mean()
        out.append(float(sc + logd))
    return float(np.mean(out))
