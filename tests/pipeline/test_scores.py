"""Objective scores and corner choice on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from smf.pipeline.scores import clip_features, farthest_four, frechet_distance, mrstft_distance


def test_frechet_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(200_000, 3))
    b = rng.normal([1.0, 0.0, 0.0], [1.0, 2.0, 3.0], size=(200_000, 3))
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 1 + 0 + 1 + 4
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_handles_singular_covariances():
    a = np.zeros((50, 4))
    a[:, 0] = np.linspace(0, 1, 50)  # rank 1
    assert np.isfinite(frechet_distance(a, a + 0.5))


def _tone(f, sr=16000, n=4000):
    return np.sin(2 * np.pi * f * np.arange(n) / sr).astype(np.float32)


def test_mrstft_is_zero_for_the_same_set_and_grows_with_the_difference():
    ref = [_tone(440), _tone(880)]
    assert mrstft_distance(ref, ref) == pytest.approx(0.0, abs=1e-6)
    near, far = mrstft_distance(ref, [_tone(450), _tone(900)]), mrstft_distance(ref, [_tone(3000), _tone(5000)])
    assert 0 < near < far


def test_farthest_four_picks_the_outliers_as_untwisted_corners():
    rng = np.random.default_rng(1)
    centre = rng.normal(0, 0.05, size=(12, 2))
    corners = np.array([[-5, -5], [5, -5], [-5, 5], [5, 5]], float)
    feats = np.concatenate([centre, corners])
    z0, z1, z2, z3 = farthest_four(feats)
    assert {z0, z1, z2, z3} == {12, 13, 14, 15}

    def d(i, j):
        return np.linalg.norm(feats[i] - feats[j])

    # sides (z0-z1, z2-z3, z0-z2, z1-z3) are shorter than the diagonals (z0-z3, z1-z2)
    assert max(d(z0, z1), d(z2, z3), d(z0, z2), d(z1, z3)) < min(d(z0, z3), d(z1, z2))


def test_clip_features_separate_different_sounds():
    clips = [_tone(300), _tone(310), _tone(4000), np.random.default_rng(0).normal(0, 0.3, 4000).astype(np.float32)]
    f = clip_features(clips, 16000)
    assert f.shape[0] == 4
    assert np.linalg.norm(f[0] - f[1]) < np.linalg.norm(f[0] - f[2])
