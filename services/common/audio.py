"""Audio in and out of smf: load/save/resample, and the SMF "pghi" spectrogram transform of the GAN.

    audio, sr = load_audio("dog.wav", sample_rate=22050, mono="mean")     # float32 [T]
    save_wav("out.wav", audio, sr)                                        # atomic
    tf = SpectrogramTransform(stft_channels=512, hop_size=256, n_frames=128, sample_rate=22050)
    spec = tf.to_spectrogram(clips)        # [B, T=tf.audio_length] -> [B, 257, 128], about [-1, 1]
    clips2 = tf.to_audio(spec)             # PGHI phase -> [B, T]

Files are read with soundfile (libsndfile: wav, flac, ogg, aiff, and mp3 from libsndfile 1.1; READABLE_FORMATS says
what this install decodes). Every failure to read a file becomes InvalidArgument(<file name>, reason and what to
do), so a user sees which file is at fault.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
import torchaudio
from smf.common import pghi
from smf.common.errors import InvalidArgument
from smf.common.files import atomic_write

MONO_POLICIES = ("mean", "first", "error")
# What soundfile's libsndfile decodes among the formats users bring (MP3 needs libsndfile >= 1.1).
READABLE_FORMATS = tuple(f for f in ("WAV", "FLAC", "OGG", "AIFF", "MP3") if f in sf.available_formats())
# The file extensions of those formats: what a folder of the user's sounds is searched for (import, GAN loader).
_EXTENSIONS_OF = {"WAV": (".wav",), "FLAC": (".flac",), "OGG": (".ogg",), "AIFF": (".aiff", ".aif"), "MP3": (".mp3",)}
AUDIO_EXTENSIONS = tuple(ext for fmt in READABLE_FORMATS for ext in _EXTENSIONS_OF[fmt])
DECODABLE_HINT = (
    f"smf reads {', '.join(f.lower() for f in READABLE_FORMATS)} (libsndfile {sf.__libsndfile_version__}): "
    "re-export the file in one of them, or remove it"
)


def _reason(exc: Exception) -> str:
    """libsndfile's complaint without the path it repeats (the error's field already names the file)."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def _check_file(path: str, label: str) -> None:
    """What libsndfile would report vaguely (or not at all), said plainly with the remedy."""
    if not os.path.isfile(path):
        raise InvalidArgument(label, "no such file")
    if os.path.getsize(path) == 0:
        raise InvalidArgument(label, "empty file (0 bytes): remove it or copy it again")
    if not os.access(path, os.R_OK):
        # libsndfile would only say "System error": say which permission is missing
        raise InvalidArgument(label, "cannot be read: permission denied (give yourself read access: chmod u+r)")


class AudioInfo(NamedTuple):
    """What a sound file's header says."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """The header of a sound file without decoding it; the same InvalidArgument(<file>, reason) as load_audio for a
    file that cannot be read.

    info = probe_audio("rain.flac"); info.sample_rate, info.channels, info.seconds
    """
    path = os.fspath(path)
    _check_file(path, path)
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise InvalidArgument(path, f"not a readable sound file ({_reason(exc)}); {DECODABLE_HINT}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise InvalidArgument(path, "contains no audio frames: remove it")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def load_audio(
    source: str | os.PathLike | bytes, *, sample_rate: int | None = None, mono: str = "mean", name: str | None = None
) -> tuple[torch.Tensor, int]:
    """Read a sound file (path or its bytes) into a mono float32 tensor [T]; returns (audio, sample_rate).

    sample_rate: resample to this rate (None keeps the file's). mono: how to fold several channels: "mean",
    "first", or "error" (refuse). name: how to call a bytes source in errors (default "<bytes>").
    """
    if mono not in MONO_POLICIES:
        raise InvalidArgument("mono", f"must be one of {', '.join(MONO_POLICIES)}, got {mono!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if len(source) == 0:
            raise InvalidArgument(label, "empty file")
        file: str | io.BytesIO = io.BytesIO(bytes(source))
    else:
        file = path = os.fspath(source)
        label = name or path
        _check_file(path, label)
    try:
        data, sr = sf.read(file, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise InvalidArgument(label, f"not a readable sound file ({_reason(exc)}); {DECODABLE_HINT}") from None
    if data.shape[0] == 0:
        raise InvalidArgument(label, "contains no audio frames")
    if not np.isfinite(data).all():
        raise InvalidArgument(label, "contains NaN or infinite samples")
    if data.shape[1] > 1:
        if mono == "error":
            raise InvalidArgument(label, f"has {data.shape[1]} channels, expected mono")
        data = data.mean(axis=1) if mono == "mean" else data[:, 0]
    else:
        data = data[:, 0]
    audio = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if sample_rate is not None and sample_rate != sr:
        audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return audio, int(sr)


@lru_cache(maxsize=16)
def _resampler(sr_in: int, sr_out: int) -> torchaudio.transforms.Resample:
    # The Resample module builds its windowed-sinc kernel once; reusing it saves that cost per file.
    return torchaudio.transforms.Resample(sr_in, sr_out)


def resample(audio: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's sinc interpolation); float32 [..., T']."""
    for field, rate in (("sr_in", sr_in), ("sr_out", sr_out)):
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise InvalidArgument(field, f"must be a positive integer sample rate, got {rate!r}")
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if sr_in == sr_out:
        return audio
    if audio.device.type == "cpu":
        return _resampler(int(sr_in), int(sr_out))(audio)
    return torchaudio.functional.resample(audio, int(sr_in), int(sr_out))


def _to_frames(audio, field: str = "audio") -> np.ndarray:
    """[T] or [C, T] tensor/array -> float32 numpy [T, C] as soundfile wants it."""
    a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim == 2:
        a = a.T
    else:
        raise InvalidArgument(field, f"expected shape [T] or [C, T], got {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise InvalidArgument(field, "has no samples")
    if not np.isfinite(a).all():
        raise InvalidArgument(field, "contains NaN or infinite samples")
    return np.ascontiguousarray(a, dtype=np.float32)


def _write(target, audio, sample_rate: int, subtype: str) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InvalidArgument("sample_rate", f"must be a positive integer, got {sample_rate!r}")
    frames = _to_frames(audio)
    if subtype.startswith("PCM"):
        # libsndfile wraps around rather than clips out-of-range floats when converting to integers.
        frames = np.clip(frames, -1.0, 1.0)
    try:
        sf.write(target, frames, int(sample_rate), subtype=subtype, format="WAV")
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("subtype", str(exc)) from None


def save_wav(path: str | os.PathLike, audio, sample_rate: int, *, subtype: str = "PCM_16") -> None:
    """Write a wav file atomically (`smf.common.files.atomic_write`): readers never see half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidArgument(path, f"folder {folder} does not exist")
    with atomic_write(path) as f:
        _write(f, audio, sample_rate, subtype)


def wav_bytes(audio, sample_rate: int, *, subtype: str = "PCM_16") -> bytes:
    """The bytes of a wav file (for the store or a gRPC AudioChunk stream)."""
    buf = io.BytesIO()
    _write(buf, audio, sample_rate, subtype)
    return buf.getvalue()


class SpectrogramTransform:
    """The SMF GAN's "pghi" transform: audio clip <-> normalised log-magnitude spectrogram.

    Parameters mirror the original transformConfig (`from_config` reads one). A clip of `audio_length` =
    n_frames * hop_size samples maps to [F = stft_channels//2 + 1, n_frames] (circular STFT, periodic Hann window of
    stft_channels samples, see smf.common.pghi).

    Normalisation (invertible): dB = 20*log10(|X| / ref), with ref = sum(window)/2, the peak magnitude of a
    full-scale sine, so 0 dB = a full-scale sinusoid regardless of stft_channels. dB is clamped below at db_floor
    (-100 by default) and mapped linearly: db_floor -> -1, 0 dB -> +1. A fixed reference (rather than each clip's
    maximum) keeps the level of a clip recoverable. Only loud broadband content exceeds +1 slightly (the
    theoretical maximum, a full-scale DC or square wave, is +6 dB -> 1.12).
    """

    def __init__(
        self,
        stft_channels: int = 512,
        hop_size: int = 256,
        n_frames: int = 128,
        sample_rate: int = 22050,
        *,
        db_floor: float = -100.0,
    ):
        pghi.check_stft_args(stft_channels, hop_size)
        if not isinstance(n_frames, int) or n_frames < 2:
            raise InvalidArgument("n_frames", f"must be an integer >= 2, got {n_frames!r}")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InvalidArgument("sample_rate", f"must be a positive integer, got {sample_rate!r}")
        if not db_floor < 0:
            raise InvalidArgument("db_floor", f"must be negative, got {db_floor!r}")
        self.stft_channels, self.hop_size, self.n_frames = stft_channels, hop_size, n_frames
        self.sample_rate, self.db_floor = sample_rate, float(db_floor)
        self.ref = float(torch.hann_window(stft_channels, periodic=True, dtype=torch.float64).sum()) / 2

    @classmethod
    def from_config(cls, transform_config: dict) -> SpectrogramTransform:
        """From an original sonyGanFork transformConfig dict (transform must be "pghi")."""
        if transform_config.get("transform") != "pghi":
            raise InvalidArgument(
                "transformConfig.transform", f'expected "pghi", got {transform_config.get("transform")!r}'
            )
        return cls(
            int(transform_config["stft_channels"]),
            int(transform_config["hop_size"]),
            int(transform_config["n_frames"]),
            int(transform_config["sample_rate"]),
        )

    @property
    def audio_length(self) -> int:
        return self.n_frames * self.hop_size

    @property
    def n_bins(self) -> int:
        return self.stft_channels // 2 + 1

    def _check_audio(self, audio: torch.Tensor) -> tuple[torch.Tensor, bool]:
        audio = torch.as_tensor(audio)
        single = audio.dim() == 1
        if single:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2 or audio.shape[-1] != self.audio_length:
            raise InvalidArgument(
                "audio", f"expected [B, {self.audio_length}] (n_frames * hop_size samples), got {tuple(audio.shape)}"
            )
        return audio.float(), single

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude [B, F, n_frames] of clips [B, audio_length]."""
        audio, single = self._check_audio(audio)
        mag = pghi.stft(audio, n_fft=self.stft_channels, hop=self.hop_size).abs()
        return mag[0] if single else mag

    def to_spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Clips [B, audio_length] (or [audio_length]) -> normalised log-magnitude [B, F, n_frames]."""
        mag = self.magnitude(audio)
        db = 20 * torch.log10(mag.clamp_min(1e-12) / self.ref)
        return db.clamp_min(self.db_floor) / (-self.db_floor / 2) + 1

    def spectrogram_to_magnitude(self, spec: torch.Tensor) -> torch.Tensor:
        """Inverse of the normalisation: [B, F, N] in ~[-1, 1] -> linear magnitude (floor bins stay at the floor)."""
        db = (spec.float() - 1) * (-self.db_floor / 2)
        return self.ref * torch.pow(10.0, db.clamp_min(self.db_floor) / 20)

    def to_audio(
        self, spec: torch.Tensor, method: str = "pghi", *, refine_iters: int = pghi.DEFAULT_REFINE, gl_iters: int = 32
    ) -> torch.Tensor:
        """Normalised spectrogram [B, F, n_frames] -> clips [B, audio_length].

        method "pghi": PGHI phase plus `refine_iters` fast Griffin-Lim steps (see smf.common.pghi.reconstruct);
        "griffinlim": torchaudio's Griffin-Lim with `gl_iters` iterations from a random phase.
        """
        spec = torch.as_tensor(spec)
        single = spec.dim() == 2
        if single:
            spec = spec.unsqueeze(0)
        if spec.dim() != 3 or tuple(spec.shape[1:]) != (self.n_bins, self.n_frames):
            raise InvalidArgument("spec", f"expected [B, {self.n_bins}, {self.n_frames}], got {tuple(spec.shape)}")
        mag = self.spectrogram_to_magnitude(spec)
        if method == "pghi":
            audio = pghi.reconstruct(mag, n_fft=self.stft_channels, hop=self.hop_size, refine_iters=refine_iters)
        elif method == "griffinlim":
            audio = griffin_lim_torchaudio(mag, n_fft=self.stft_channels, hop=self.hop_size, n_iter=gl_iters)
        else:
            raise InvalidArgument("method", f'must be "pghi" or "griffinlim", got {method!r}')
        return audio[0] if single else audio


def griffin_lim_torchaudio(magnitude: torch.Tensor, *, n_fft: int, hop: int, n_iter: int = 32) -> torch.Tensor:
    """torchaudio's Griffin-Lim on a magnitude of the circular STFT: [B, F, N] -> [B, N * hop].

    torchaudio's STFT is not circular; appending frame 0 as frame N (they are the same frame of the circular STFT)
    gives it N + 1 centred frames that cover exactly N * hop samples.
    """
    gl = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop, power=1.0, n_iter=n_iter).to(magnitude.device)
    mag = torch.cat([magnitude, magnitude[..., :1]], dim=-1)
    return gl(mag)[..., : magnitude.shape[-1] * hop]
