"""What "how far apart two cells sound" is measured on, for the SOM.

    extractor = FeatureExtractor("perceptual", sample_rate=16000)
    feats = extractor(audio)                  # audio [N, T] -> features [N, K]; normalisation fixed on first call

Kinds:
* ``spectrogram`` — the GAN's own output log-magnitude spectrogram compared whole by L2 (the seed notebook's choice,
  the default for compatibility). Pass the generator's spectrograms as `spectrograms=`; without them the audio is
  re-analysed with the model's transform.
* ``logmel`` / ``mfcc`` — per-band mean and standard deviation over time of a log-mel spectrogram / MFCCs.
* ``centroid`` — spectral centroid (mean, std over time, in octaves), ``loudness`` — RMS level in dB (mean, std).
* ``perceptual`` — logmel + centroid + loudness, each group normalised and weighted (`weights=`).

Group normalisation is fitted on the first batch — the initial mesh — and then kept, so distances from later
iterations are comparable with the first: each group is centred and divided by its total standard deviation
(sqrt of the summed per-feature variances) over that mesh, so every group starts with the same spread whatever its
units and size. Not a per-feature z-score: that would blow a feature that barely varies (the centroid's spread over
time for a steady tone, ~1e-6) up to unit size, and distances would then measure its numerical noise. A group's
weight is its share of the squared distance: with weights {"logmel": 2, "centroid": 1, "loudness": 0},
d² = 2·d²_logmel + d²_centroid (each group's features are scaled by sqrt(weight)). Weights apply to every kind;
for a single-group kind they only scale the distance, which the scale-free "even" rule ignores and the "original"
rule's step feels.
"""

from __future__ import annotations

import functools

import torch
import torchaudio
from smf.common.errors import InvalidArgument

KINDS = ("spectrogram", "logmel", "mfcc", "centroid", "loudness", "perceptual")
PERCEPTUAL_GROUPS = ("logmel", "centroid", "loudness")


def _frames(sample_rate: int) -> tuple[int, int]:
    n_fft = 1024 if sample_rate > 24000 else 512
    return n_fft, n_fft // 4


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int, n_mels: int) -> torchaudio.transforms.MelSpectrogram:
    # built once per rate: the SOM calls the extractor every iteration and the filterbank does not change
    n_fft, hop = _frames(sample_rate)
    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)


@functools.lru_cache(maxsize=8)
def _mfcc(sample_rate: int, n_mfcc: int) -> torchaudio.transforms.MFCC:
    n_fft, hop = _frames(sample_rate)
    return torchaudio.transforms.MFCC(
        sample_rate, n_mfcc=n_mfcc, melkwargs={"n_fft": n_fft, "hop_length": hop, "n_mels": 40}
    )


def logmel_stats(audio: torch.Tensor, sample_rate: int, n_mels: int = 40) -> torch.Tensor:
    m = (_mel(sample_rate, n_mels).to(audio)(audio) + 1e-6).log()
    return torch.cat([m.mean(-1), m.std(-1)], dim=-1)


def mfcc_stats(audio: torch.Tensor, sample_rate: int, n_mfcc: int = 20) -> torch.Tensor:
    c = _mfcc(sample_rate, n_mfcc).to(audio)(audio)
    return torch.cat([c.mean(-1), c.std(-1)], dim=-1)


def centroid_stats(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    n_fft, hop = _frames(sample_rate)
    c = torchaudio.functional.spectral_centroid(
        audio,
        sample_rate,
        pad=0,
        window=torch.hann_window(n_fft).to(audio),
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
    )
    octaves = torch.log2(c.nan_to_num(0.0).clamp_min(20.0))  # silent frames give NaN centroids
    return torch.stack([octaves.mean(-1), octaves.std(-1)], dim=-1)


def loudness_stats(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    _, hop = _frames(sample_rate)
    frames = audio.unfold(-1, hop * 2, hop)
    db = 10 * torch.log10(frames.pow(2).mean(-1) + 1e-10)
    return torch.stack([db.mean(-1), db.std(-1)], dim=-1)


GROUPS = {"logmel": logmel_stats, "mfcc": mfcc_stats, "centroid": centroid_stats, "loudness": loudness_stats}


class FeatureExtractor:
    """Maps a batch of rendered cells to feature vectors; see the module docstring for the kinds."""

    def __init__(
        self, kind: str = "spectrogram", *, sample_rate: int, weights: dict[str, float] | None = None, transform=None
    ):
        if kind not in KINDS:
            raise InvalidArgument("features", f"must be one of {KINDS}, got {kind!r}")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InvalidArgument("sample_rate", f"must be a positive integer, got {sample_rate!r}")
        self.kind = kind
        self.sample_rate = sample_rate
        self.transform = transform
        groups = PERCEPTUAL_GROUPS if kind == "perceptual" else (kind,)
        self.weights = {g: 1.0 for g in groups}
        for name, w in (weights or {}).items():
            if name not in self.weights:
                raise InvalidArgument("feature_weights", f"unknown group {name!r}; {kind} has {list(self.weights)}")
            if not (w >= 0 and w < float("inf")):
                raise InvalidArgument("feature_weights", f"weight of {name!r} must be >= 0, got {w}")
            self.weights[name] = float(w)
        if not any(w > 0 for w in self.weights.values()):
            raise InvalidArgument("feature_weights", f"at least one of {list(self.weights)} needs a weight > 0")
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def describe(self) -> dict:
        return {"kind": self.kind, "weights": self.weights, "sample_rate": self.sample_rate}

    @property
    def fitted(self) -> bool:
        """Whether the perceptual normalisation has been fitted (by the first call)."""
        return bool(self._stats)

    def __call__(self, audio: torch.Tensor, *, spectrograms: torch.Tensor | None = None) -> torch.Tensor:
        """Audio [N, T] (float, mono) -> features [N, K] (float64)."""
        audio = torch.as_tensor(audio)
        if audio.dim() != 2 or audio.shape[0] == 0:
            raise InvalidArgument("audio", f"expected a batch of mono clips [N, T], got shape {tuple(audio.shape)}")
        if self.kind == "spectrogram":
            if spectrograms is None:
                if self.transform is None:
                    raise InvalidArgument("features", "spectrogram features need the model's spectrograms or transform")
                spectrograms = self.transform.to_spectrogram(audio)
            if len(spectrograms) != len(audio):
                raise InvalidArgument("spectrograms", f"{len(spectrograms)} spectrograms for {len(audio)} clips")
            return self.weights["spectrogram"] ** 0.5 * spectrograms.reshape(spectrograms.shape[0], -1).double()
        n_fft, _ = _frames(self.sample_rate)
        if audio.shape[1] < n_fft:
            raise InvalidArgument(
                "audio",
                f"clips of {audio.shape[1]} samples are shorter than one analysis frame "
                f"({n_fft} samples at {self.sample_rate} Hz)",
            )
        audio = audio.float()
        parts = []
        for group, weight in self.weights.items():
            f = GROUPS[group](audio, self.sample_rate).double()
            if self.kind == "perceptual":
                if group not in self._stats:  # fitted once, on the initial mesh
                    spread = f.var(0, unbiased=False).sum().sqrt()
                    # a group constant over the mesh keeps its raw scale (it adds no distance there anyway)
                    self._stats[group] = (f.mean(0), spread if spread > 1e-9 else torch.ones_like(spread))
                mean, spread = self._stats[group]
                f = (f - mean) / spread
            parts.append(weight**0.5 * f)
        return torch.cat(parts, dim=-1)
