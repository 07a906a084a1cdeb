"""The SOM orchestration on a real file store with a synthetic renderer whose answer is known.

The renderer maps a 2-D latent (x, y) to a tone whose pitch rises as 4·x³ octaves and whose level rises as y³:
equal latent steps are very unequal steps in sound, so linearizing must even them out. The GAN-in-the-loop
version over gRPC is tests/som/test_server.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from smf.common.audio import SpectrogramTransform
from smf.common.errors import AlreadyExists, Cancelled, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from smf.common.lineage import list_artifacts, read_manifest, verify_artifact
from smf.common.params import read_params
from smf.grid.grid import grid_latents
from smf.grid.render import read_grid, render_grid
from smf.som.linearize import (
    artifact_ref,
    linearize,
    load_grid,
    load_linearized,
    model_transform,
    read_metrics,
    render_linearized,
    require_model,
)
from smf.som.som import SomConfig

SR = 16000
T = 2048
pytestmark = pytest.mark.usefixtures("one_thread")


def warped_tones(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    x, y = np.clip(z[:, 0], 0, 1), np.clip(z[:, 1], 0, 1)
    freq = 200 * 2 ** (4 * x**3)
    amp = 0.05 + 0.9 * y**3
    t = np.arange(T) / SR
    return (amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None])).astype(np.float32)


@pytest.fixture
def grid(file_store):
    corners = [torch.tensor(v) for v in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0])]
    render_grid(
        file_store,
        "grids/g",
        grid_latents(*corners, d0=5, d1=5),
        warped_tones,
        model="gan/synthetic",
        sample_rate=SR,
        inputs=["gan/synthetic"],
        config={"corners": ["inline"] * 4},
    )
    return file_store, load_grid(file_store, "grids/g")


def on_segment(p, a, b, tol=1e-5) -> bool:
    ab, ap = b - a, p - a
    t = float(ap @ ab / (ab @ ab))
    return -tol <= t <= 1 + tol and float((ap - t * ab).norm()) < tol


def test_linearize_evens_a_warped_grid_and_stores_everything(grid):
    store, g = grid
    assert (g.d0, g.d1, g.latent_dim, g.model, g.sample_rate) == (5, 5, 2, "gan/synthetic", SR)
    seen = []
    out = linearize(
        store,
        g,
        warped_tones,
        features="perceptual",
        config=SomConfig(iterations=40),
        on_iteration=lambda it, m: seen.append((it, m["cov"])),
    )
    m = out.metrics
    assert [s[0] for s in seen] == list(range(m["iterations"] + 1))
    assert m["after"]["cov"] < 0.7 * m["before"]["cov"]  # measured: 0.72 -> 0.40
    assert m["cov_reduction"] == pytest.approx(1 - m["after"]["cov"] / m["before"]["cov"])
    assert m["features"] == {
        "kind": "perceptual",
        "sample_rate": SR,
        "weights": {"logmel": 1.0, "centroid": 1.0, "loudness": 1.0},
    }
    assert m["config"]["rule"] == "even" and m["config"]["effective_step"] == 0.1
    assert len(m["adjacent_distances"]["before"]["horizontal"]) == 5
    assert len(m["adjacent_distances"]["before"]["horizontal"][0]) == 4
    assert len(m["adjacent_distances"]["after"]["vertical"]) == 4

    # the artifact: linearized.pt [d1, d0, dim] as a plain tensor, metrics.json, plots, lineage
    manifest = read_manifest(store, out.som_id)
    assert manifest.kind == "som" and manifest.inputs == ["grids/g", "gan/synthetic"]
    assert set(manifest.files) == {
        "linearized.pt",
        "metrics.json",
        "plots/mesh.png",
        "plots/distances.png",
        "plots/convergence.png",
    }
    verify_artifact(store, out.som_id)
    z = torch.load(io.BytesIO(store.get_bytes(f"{out.som_id}/linearized.pt")), weights_only=True)
    assert z.shape == (5, 5, 2) and z.dtype == torch.float32
    for i in (0, -1):  # corners pinned exactly
        for j in (0, -1):
            assert torch.equal(z[i, j], g.latents[i, j])
    for j in range(1, 4):  # edge points stay on their edge lines
        assert on_segment(z[0, j], z[0, 0], z[0, -1]) and on_segment(z[-1, j], z[-1, 0], z[-1, -1])
    for i in range(1, 4):
        assert on_segment(z[i, 0], z[0, 0], z[-1, 0]) and on_segment(z[i, -1], z[0, -1], z[-1, -1])
    # where the pitch climbs fastest (large x) the columns move closer together
    assert z[2, 3, 0] - z[2, 2, 0] < z[2, 1, 0] - z[2, 0, 0]
    for name in ("mesh", "distances", "convergence"):
        assert store.get_bytes(f"{out.som_id}/plots/{name}.png")[:4] == b"\x89PNG"
    doc = read_metrics(store, out.som_id)
    assert doc["before"] == m["before"] and doc["created_at"] == manifest.created_at
    assert json.loads(store.get_bytes(f"{out.som_id}/metrics.json"))["history"][0]["iteration"] == 0


def test_render_linearized_makes_a_grid_like_any_other(grid):
    store, g = grid
    out = linearize(store, g, warped_tones, features="loudness", config=SomConfig(iterations=3))
    done = []
    manifest = render_linearized(
        store,
        out.som_id,
        warped_tones,
        d0=5,
        d1=5,
        pm=True,
        grid_id="grids/lin",
        on_progress=lambda d, t: done.append((d, t)),
        batch_size=10,
    )
    assert manifest.kind == "som-grid" and manifest.id == "grids/lin"
    assert manifest.inputs == [out.som_id, "gan/synthetic"]
    assert done[-1] == (25, 25)
    doc = read_grid(store, "grids/lin")
    assert doc["kind"] == "som-grid" and doc["linearization"] == out.som_id and doc["source_grid"] == "grids/g"
    assert (doc["d0"], doc["d1"], len(doc["cells"])) == (5, 5, 25)
    cell = doc["cells"][7]  # i=1, j=2
    pf = read_params(store.get_bytes(f"grids/lin/{cell['params']}"))
    assert pf.params["dim0"].values[0] == pytest.approx(0.5) and pf.params["dim1"].values[0] == pytest.approx(0.25)
    assert "envPt" in pf.params
    assert store.get_bytes(f"grids/lin/{cell['file']}")[:4] == b"RIFF"
    z = torch.load(io.BytesIO(store.get_bytes("grids/lin/latents.pt")), weights_only=True)
    torch.testing.assert_close(z, load_linearized(store, out.som_id)[0])
    with pytest.raises(AlreadyExists):
        render_linearized(store, out.som_id, warped_tones, grid_id="grids/lin")


def test_d0_d1_must_match_the_tensor(grid):
    store, g = grid
    out = linearize(store, g, warped_tones, features="centroid", config=SomConfig(iterations=1))
    with pytest.raises(InvalidArgument) as err:
        render_linearized(store, out.som_id, warped_tones, d0=21, d1=5)
    assert err.value.field == "d0" and "d0=5" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        load_linearized(store, out.som_id, d0=5, d1=4)
    assert err.value.field == "d1"
    assert load_linearized(store, out.som_id)[0].shape == (5, 5, 2)  # 0 = take the tensor's shape
    assert list_artifacts(store, "grids") == ["grids/g"]  # the failed calls rendered nothing


def test_spectrogram_features_re_analyse_the_audio_with_the_models_transform(grid):
    store, g = grid
    transform = SpectrogramTransform(128, 64, 32, SR)  # 2048 samples, as the renderer makes
    out = linearize(store, g, warped_tones, features="spectrogram", transform=transform, config=SomConfig(iterations=2))
    assert out.metrics["features"]["kind"] == "spectrogram" and out.metrics["iterations"] == 2
    # without a transform, it comes from the model's config.json — which this synthetic model has not
    with pytest.raises(FailedPrecondition) as err:
        linearize(store, g, warped_tones, features="spectrogram", config=SomConfig(iterations=1))
    assert "gan/synthetic" in err.value.message and "config.json" in err.value.message
    with pytest.raises(FailedPrecondition):
        model_transform(store, "gan/synthetic")


def test_diverging_step_and_nan_audio_fail_before_anything_is_stored(grid):
    store, g = grid
    rendered = []

    def spy(z):
        rendered.append(np.asarray(z).copy())
        return warped_tones(z)

    with pytest.raises(InvalidArgument) as err:
        linearize(
            store,
            g,
            spy,
            features="loudness",
            som_id="som/big",
            config=SomConfig(rule="original", step=1e12, iterations=5),
        )
    assert err.value.field == "step"
    assert all(np.abs(z).max() < 10 for z in rendered)  # the diverged mesh was never rendered
    with pytest.raises(FailedPrecondition) as err:
        linearize(
            store,
            g,
            lambda z: np.full((len(z), T), np.nan, np.float32),
            features="loudness",
            som_id="som/nan",
            config=SomConfig(iterations=1),
        )
    assert "NaN" in err.value.message
    assert store.list("som") == []


def test_should_stop_cancels_and_stores_nothing(grid):
    store, g = grid
    calls = []
    with pytest.raises(Cancelled):
        linearize(
            store,
            g,
            warped_tones,
            features="loudness",
            config=SomConfig(iterations=50, tolerance=0),
            on_iteration=lambda it, m: calls.append(it),
            should_stop=lambda: len(calls) > 2,
        )
    assert len(calls) == 3 and store.list("som") == []


def test_bad_inputs(grid, tmp_path):
    store, g = grid
    with pytest.raises(InvalidArgument) as err:
        linearize(store, g, warped_tones, features="timbre")
    assert err.value.field == "features"
    with pytest.raises(InvalidArgument) as err:
        linearize(store, g, warped_tones, features="loudness", config=SomConfig(axes="diagonal"))
    assert err.value.field == "axes"
    out = linearize(store, g, warped_tones, features="loudness", config=SomConfig(iterations=0), som_id="som/x")
    assert out.metrics["iterations"] == 0 and out.som_id == "som/x"
    with pytest.raises(AlreadyExists):
        linearize(store, g, warped_tones, features="loudness", config=SomConfig(iterations=0), som_id="x")
    with pytest.raises(NotFound):
        load_grid(store, "grids/missing")
    with pytest.raises(NotFound):
        load_linearized(store, "som/missing")
    with pytest.raises(FailedPrecondition) as err:
        require_model(store, "gan/synthetic", used_by="grids/g")
    assert "gan/synthetic" in err.value.message and "grids/g" in err.value.message


def test_artifact_ids_accept_ids_bare_names_and_uris(file_store):
    store = file_store
    assert artifact_ref(store, "grids/abc", "grids", field="grid_id") == "grids/abc"
    assert artifact_ref(store, "abc", "grids", field="grid_id") == "grids/abc"
    assert artifact_ref(store, store.key_uri("som/x1"), "som", field="linearization_id") == "som/x1"
    for bad in ("", "grids/a/b", "../x", "grids/a b"):
        with pytest.raises(InvalidArgument) as err:
            artifact_ref(store, bad, "grids", field="grid_id")
        assert err.value.field == "grid_id", bad
    with pytest.raises(PermissionDenied) as err:  # another store: refused without looking (common.refs)
        artifact_ref(store, "file:///elsewhere/grids/abc", "grids", field="grid_id")
    assert err.value.message.startswith("grid_id: ")


def test_grids_with_variations_use_each_cells_own_latent(file_store):
    corners = [torch.tensor(v) for v in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0])]
    base = grid_latents(*corners, d0=3, d1=3)
    with_noise = torch.stack([base, base + 0.01], dim=2)  # [d1, d0, K=2, dim]
    render_grid(
        file_store, "grids/v", with_noise, warped_tones, model="gan/synthetic", sample_rate=SR, inputs=["gan/synthetic"]
    )
    g = load_grid(file_store, "grids/v")
    assert g.latents.shape == (3, 3, 2)
    torch.testing.assert_close(g.latents, base)
