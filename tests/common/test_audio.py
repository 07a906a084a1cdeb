"""Audio I/O, resampling and the SMF "pghi" spectrogram transform."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from smf.common.audio import SpectrogramTransform, load_audio, resample, save_wav, wav_bytes
from smf.common.errors import InvalidArgument


def _tone(sr=16000, seconds=0.5, freq=440.0, amp=0.5, n=None):
    t = torch.arange(n or round(sr * seconds)) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


@pytest.mark.parametrize(
    "fmt,ext,subtype", [("WAV", "wav", "PCM_16"), ("FLAC", "flac", "PCM_16"), ("OGG", "ogg", "VORBIS")]
)
def test_load_formats_from_path_and_bytes(tmp_path, fmt, ext, subtype):
    x = _tone().numpy()
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    audio, sr = load_audio(path)
    assert sr == 16000 and audio.dtype == torch.float32 and audio.dim() == 1
    tol = 0.05 if fmt == "OGG" else 1e-3  # vorbis is lossy
    n = min(len(audio), len(x))
    assert np.abs(audio.numpy()[:n] - x[:n]).max() < tol or fmt == "OGG"
    same, _ = load_audio(path.read_bytes())
    assert torch.equal(same, audio)


def test_save_load_round_trip(tmp_path):
    x = _tone()
    path = tmp_path / "out.wav"
    save_wav(path, x, 16000)
    y, sr = load_audio(path)
    assert sr == 16000 and y.shape == x.shape
    assert (y - x).abs().max() < 1.0 / 2**14  # PCM_16 quantisation
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temp file left behind
    z, _ = load_audio(wav_bytes(x, 16000, subtype="FLOAT"))
    assert torch.equal(z, x)


def test_save_clips_instead_of_wrapping(tmp_path):
    path = tmp_path / "loud.wav"
    save_wav(path, torch.tensor([1.5, -1.5, 0.25]), 8000)
    y, _ = load_audio(path)
    assert y[0] > 0.99 and y[1] < -0.99 and abs(y[2] - 0.25) < 1e-3


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(InvalidArgument, match="audio"):
        save_wav(tmp_path / "x.wav", torch.zeros(1, 2, 3), 8000)
    with pytest.raises(InvalidArgument, match="NaN"):
        wav_bytes(torch.tensor([0.0, float("nan")]), 8000)
    with pytest.raises(InvalidArgument, match="does not exist"):
        save_wav(tmp_path / "missing" / "x.wav", torch.zeros(10), 8000)
    with pytest.raises(InvalidArgument, match="sample_rate"):
        wav_bytes(torch.zeros(10), 0)


def test_mono_policy(tmp_path):
    left, right = _tone(freq=440.0), _tone(freq=660.0, amp=0.25)
    path = tmp_path / "stereo.wav"
    save_wav(path, torch.stack([left, right]), 16000, subtype="FLOAT")
    mean, _ = load_audio(path, mono="mean")
    first, _ = load_audio(path, mono="first")
    assert torch.allclose(mean, (left + right) / 2, atol=1e-6)
    assert torch.allclose(first, left, atol=1e-6)
    with pytest.raises(InvalidArgument, match="stereo.wav.*2 channels"):
        load_audio(path, mono="error")
    with pytest.raises(InvalidArgument, match="mono"):
        load_audio(path, mono="left")
    mono_path = tmp_path / "mono.wav"
    save_wav(mono_path, left, 16000)
    assert load_audio(mono_path, mono="error")[0].shape == left.shape


def test_load_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    text = tmp_path / "notes.ogg"
    text.write_text("not audio at all")
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, dtype=np.float32), 16000)
    for path in (corrupt, empty, text, header_only, tmp_path / "missing.wav"):
        with pytest.raises(InvalidArgument) as err:
            load_audio(path)
        assert err.value.field == str(path) and str(path) in err.value.message
    with pytest.raises(InvalidArgument, match="upload.wav"):
        load_audio(b"garbage bytes", name="upload.wav")
    with pytest.raises(InvalidArgument, match="<bytes>"):
        load_audio(b"")


def test_resample_rate_and_length(tmp_path):
    x = _tone(sr=16000, seconds=1.0, freq=1000.0)
    y = resample(x, 16000, 22050)
    assert y.shape == (22050,) and y.dtype == torch.float32
    # still a 1 kHz tone: the peak of its spectrum at 1 kHz
    peak_hz = torch.fft.rfft(y).abs().argmax().item() * 22050 / len(y)
    assert abs(peak_hz - 1000.0) < 2.0
    assert resample(torch.zeros(3, 8000), 8000, 4000).shape == (3, 4000)
    path = tmp_path / "a.wav"
    save_wav(path, x, 16000)
    z, sr = load_audio(path, sample_rate=8000)
    assert sr == 8000 and z.shape == (8000,)
    with pytest.raises(InvalidArgument, match="sr_out"):
        resample(x, 16000, 0)


def test_transform_round_trip_shapes():
    tf = SpectrogramTransform(stft_channels=512, hop_size=256, n_frames=128, sample_rate=22050)
    assert tf.audio_length == 128 * 256
    bin10 = 10 * 22050 / 512  # on a bin centre, so the peak is exactly the sine's level
    x = torch.stack(
        [_tone(22050, freq=bin10, n=tf.audio_length), _tone(22050, freq=1234.5, amp=0.1, n=tf.audio_length)]
    )
    spec = tf.to_spectrogram(x)
    assert spec.shape == (2, 257, 128) and spec.dtype == torch.float32
    assert spec.min() >= -1.0 and spec.max() <= 1.0 + 1e-6
    assert abs(spec[0].max() - (1 + 20 * math.log10(0.5) / 50)) < 1e-3  # amplitude 0.5 = -6.02 dB -> 0.8796
    for method in ("pghi", "griffinlim"):
        y = tf.to_audio(spec, method=method)
        assert y.shape == x.shape and torch.isfinite(y).all()
    # the level survives: the normalisation has a fixed reference, not the clip's maximum
    y = tf.to_audio(spec)
    assert abs(y[0].pow(2).mean().sqrt() / x[0].pow(2).mean().sqrt() - 1) < 0.05
    assert tf.to_spectrogram(x[0]).shape == (257, 128) and tf.to_audio(spec[0]).shape == (tf.audio_length,)


def test_transform_normalisation_is_invertible():
    tf = SpectrogramTransform(stft_channels=256, hop_size=64, n_frames=32, sample_rate=16000)
    x = torch.randn(2, tf.audio_length, generator=torch.Generator().manual_seed(0)) * 0.1
    spec = tf.to_spectrogram(x)
    assert spec.shape == (2, 129, 32)
    assert torch.allclose(tf.spectrogram_to_magnitude(spec), tf.magnitude(x), rtol=1e-4, atol=1e-6)
    silent = tf.to_spectrogram(torch.zeros(1, tf.audio_length))
    assert torch.all(silent == -1.0)  # clamped at the floor


def test_transform_rejects_wrong_shapes_and_config():
    tf = SpectrogramTransform(stft_channels=128, hop_size=64, n_frames=8, sample_rate=8000)
    with pytest.raises(InvalidArgument, match="audio"):
        tf.to_spectrogram(torch.zeros(1, 100))
    with pytest.raises(InvalidArgument, match="spec"):
        tf.to_audio(torch.zeros(1, 10, 8))
    with pytest.raises(InvalidArgument, match="method"):
        tf.to_audio(torch.zeros(1, 65, 8), method="magic")
    cfg = {"transform": "pghi", "stft_channels": 512, "n_frames": 128, "hop_size": 256, "sample_rate": 22050}
    assert SpectrogramTransform.from_config(cfg).audio_length == 32768
    with pytest.raises(InvalidArgument, match="transformConfig.transform"):
        SpectrogramTransform.from_config({**cfg, "transform": "stft"})
    with pytest.raises(InvalidArgument, match="n_fft"):
        SpectrogramTransform(stft_channels=511)
