"""What the SOM measures distance on: shapes per kind, known values on pure tones, the perceptual normalisation
(fitted once, on the first batch), group weights, and errors that name the field."""

from __future__ import annotations

import math

import pytest
import torch
from smf.common.audio import SpectrogramTransform
from smf.common.errors import InvalidArgument
from smf.som.features import KINDS, FeatureExtractor

SR = 16000
T = 4096
pytestmark = pytest.mark.usefixtures("one_thread")


def tones(freqs, amps=None, *, n=T, sr=SR) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / sr
    amps = amps or [0.5] * len(freqs)
    return torch.stack([a * torch.sin(2 * math.pi * f * t) for f, a in zip(freqs, amps, strict=False)]).float()


@pytest.mark.parametrize(
    "kind, dims", [("logmel", 80), ("mfcc", 40), ("centroid", 2), ("loudness", 2), ("perceptual", 84)]
)
def test_shapes_and_dtype(kind, dims):
    f = FeatureExtractor(kind, sample_rate=SR)(tones([220, 440, 880]))
    assert f.shape == (3, dims) and f.dtype == torch.float64 and torch.isfinite(f).all()


def test_silence_gives_finite_features():
    for kind in ("logmel", "mfcc", "centroid", "loudness", "perceptual"):
        assert torch.isfinite(FeatureExtractor(kind, sample_rate=SR)(torch.zeros(2, T))).all(), kind


def test_centroid_and_loudness_of_pure_tones():
    audio = tones([250, 1000, 4000], [1.0, 0.5, 0.1])
    c = FeatureExtractor("centroid", sample_rate=SR)(audio)
    # mean centroid in octaves ~ log2(f) (the edge frames see the clip's start and end, hence the tolerance)
    assert c[:, 0].tolist() == pytest.approx([math.log2(250), math.log2(1000), math.log2(4000)], abs=0.15)
    t = torch.arange(T, dtype=torch.float64) / SR
    glide = torch.sin(2 * math.pi * 250 * T / SR * (2 ** (4 * t * SR / T) - 1) / (4 * math.log(2))).float()
    g = FeatureExtractor("centroid", sample_rate=SR)(glide[None])
    assert g[0, 1] > 4 * c[:, 1].max()  # a 4-octave glide moves far more than a steady tone
    db = FeatureExtractor("loudness", sample_rate=SR)(audio)
    # RMS of a sine of amplitude a is a/sqrt(2): -3 dB at full scale
    expected = [20 * math.log10(a / math.sqrt(2)) for a in (1.0, 0.5, 0.1)]
    assert db[:, 0].tolist() == pytest.approx(expected, abs=0.2)


def test_spectrogram_features_use_the_transform_or_given_spectrograms():
    transform = SpectrogramTransform(128, 64, 32, SR)
    audio = tones([300, 600], n=transform.audio_length)
    ex = FeatureExtractor("spectrogram", sample_rate=SR, transform=transform)
    f = ex(audio)
    assert f.shape == (2, 65 * 32)
    torch.testing.assert_close(f, transform.to_spectrogram(audio).reshape(2, -1).double())
    given = torch.randn(2, 65, 32)
    torch.testing.assert_close(
        FeatureExtractor("spectrogram", sample_rate=SR)(audio, spectrograms=given), given.reshape(2, -1).double()
    )


def test_perceptual_normalisation_is_fitted_once_on_the_first_batch():
    first = tones([200, 400, 800, 1600], [0.9, 0.5, 0.2, 0.05])
    ex = FeatureExtractor("perceptual", sample_rate=SR)
    assert not ex.fitted
    f1 = ex(first)
    assert ex.fitted
    # each group is centred and has total variance 1 over the first batch (weights 1)
    sizes = {"logmel": 80, "centroid": 2, "loudness": 2}
    start = 0
    for group, n in sizes.items():
        part = f1[:, start : start + n]
        assert part.mean(0).abs().max() < 1e-9, group
        assert part.var(0, unbiased=False).sum().item() == pytest.approx(1.0, rel=1e-6), group
        start += n
    # later batches reuse the first batch's statistics: the same clips give the same features ...
    later = tones([3000, 400])
    f2 = ex(later)
    torch.testing.assert_close(f2[1], f1[1])
    # ... which a fresh extractor fitted on the later batch would not give
    assert not torch.allclose(FeatureExtractor("perceptual", sample_rate=SR)(later), f2)


def test_group_weights_set_each_groups_share_of_the_squared_distance():
    audio = tones([200, 400, 800, 1600], [0.9, 0.5, 0.2, 0.05])
    base = FeatureExtractor("perceptual", sample_rate=SR)(audio)
    weighted = FeatureExtractor(
        "perceptual", sample_rate=SR, weights={"logmel": 4.0, "centroid": 1.0, "loudness": 0.0}
    )(audio)
    torch.testing.assert_close(weighted[:, :80], 2.0 * base[:, :80])  # sqrt(4): d² counts 4 times
    torch.testing.assert_close(weighted[:, 80:82], base[:, 80:82])
    assert weighted[:, 82:].abs().max() == 0  # weight 0 removes the group
    d2 = (weighted[0] - weighted[1]).pow(2).sum()
    parts = [(base[0, s] - base[1, s]).pow(2).sum() for s in (slice(0, 80), slice(80, 82), slice(82, 84))]
    assert d2.item() == pytest.approx((4 * parts[0] + parts[1]).item())
    # a single-group kind: the weight only scales the distance
    one = FeatureExtractor("logmel", sample_rate=SR)(audio)
    torch.testing.assert_close(FeatureExtractor("logmel", sample_rate=SR, weights={"logmel": 9.0})(audio), 3 * one)


def test_describe_records_kind_and_weights():
    ex = FeatureExtractor("perceptual", sample_rate=SR, weights={"centroid": 2})
    assert ex.describe() == {
        "kind": "perceptual",
        "sample_rate": SR,
        "weights": {"logmel": 1.0, "centroid": 2.0, "loudness": 1.0},
    }
    assert set(KINDS) == {"spectrogram", "logmel", "mfcc", "centroid", "loudness", "perceptual"}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"kind": "timbre"}, "features"),
        ({"kind": "perceptual", "weights": {"pitch": 1.0}}, "feature_weights"),
        ({"kind": "perceptual", "weights": {"logmel": -1.0}}, "feature_weights"),
        ({"kind": "perceptual", "weights": {"logmel": float("nan")}}, "feature_weights"),
        ({"kind": "perceptual", "weights": {"logmel": 0, "centroid": 0, "loudness": 0}}, "feature_weights"),
        ({"kind": "logmel", "sample_rate": 0}, "sample_rate"),
    ],
)
def test_bad_configuration_names_the_field(kwargs, field):
    kwargs = {"sample_rate": SR, **kwargs}
    with pytest.raises(InvalidArgument) as err:
        FeatureExtractor(kwargs.pop("kind"), **kwargs)
    assert err.value.field == field


def test_bad_audio_names_the_problem():
    with pytest.raises(InvalidArgument) as err:
        FeatureExtractor("logmel", sample_rate=SR)(torch.zeros(T))
    assert err.value.field == "audio"
    with pytest.raises(InvalidArgument) as err:
        FeatureExtractor("loudness", sample_rate=SR)(torch.zeros(2, 100))
    assert err.value.field == "audio" and "shorter" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        FeatureExtractor("spectrogram", sample_rate=SR)(torch.zeros(2, T))
    assert err.value.field == "features"
    with pytest.raises(InvalidArgument) as err:
        FeatureExtractor("spectrogram", sample_rate=SR)(torch.zeros(2, T), spectrograms=torch.zeros(3, 4, 4))
    assert err.value.field == "spectrograms"
