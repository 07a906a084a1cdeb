"""render_grid on both store backends: cells, .params equal field by field to paramManager's 2D4pt files, grid.json,
mosaic, manifest last; linearized [d1, d0, dim] input (the SOM's use); a failing render leaves nothing behind.

The render function here is a plain deterministic synthesizer (a tone whose pitch follows the latent), so these
tests exercise the writing side without a GAN; tests/grid/test_server.py renders with the real GAN service.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from smf.common.errors import Cancelled
from smf.common.lineage import read_manifest, verify_artifact
from smf.common.params import read_params
from smf.grid.grid import grid_latents
from smf.grid.render import render_grid

SR, T = 8000, 800


def tone(latents: np.ndarray) -> np.ndarray:
    f = 200 + 100 * np.abs(latents).mean(axis=1, keepdims=True)
    return (0.5 * np.sin(2 * np.pi * f * np.arange(T) / SR)).astype(np.float32)


def seed_params(filename: str, i: int, j: int, d0: int, d1: int, dur: float) -> dict:
    """What sonyGanFork's 2D4pt.py `--pm True` writes through paramManager (pdict.addParam + json.dump indent 4),
    except minval/maxval as numbers instead of the string 'null' (smf's documented departure)."""
    edges = np.linspace(0, dur, 12, True)
    times = np.stack([edges[:-1], edges[1:] - 0.000001], axis=1).reshape(-1).tolist()
    values = np.repeat(np.linspace(0, 1, 11, True), 2).tolist()

    def const(v, n):
        return {
            "times": [0.0, dur],
            "values": [v, v],
            "units": f"norm, interp steps in[0,{n}]",
            "nvals": n,
            "minval": 0,
            "maxval": 1,
            "origMinval": None,
            "origUnits": None,
            "origMaxval": None,
        }

    return {
        "meta": {"filename": filename},
        "dim0": const(j / (d0 - 1), d0),
        "dim1": const(i / (d1 - 1), d1),
        "envPt": {
            "times": times,
            "values": values,
            "units": f"norm, duration in[0,{dur}]",
            "nvals": 0,
            "minval": 0,
            "maxval": 1,
            "origMinval": None,
            "origUnits": None,
            "origMaxval": None,
        },
    }


def test_render_writes_an_artifact(store):
    z = grid_latents(*torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), d0=4, d1=3)
    seen = []
    manifest = render_grid(
        store,
        "grids/g1",
        z,
        tone,
        model="gan/m",
        sample_rate=SR,
        inputs=["gan/m", "samples/s"],
        config={"interpolation": "linear"},
        pm=True,
        on_progress=lambda done, total: seen.append((done, total)),
        batch_size=5,
    )
    assert seen == [(5, 12), (10, 12), (12, 12)]
    assert manifest.kind == "grid" and manifest.inputs == ["gan/m", "samples/s"]
    assert read_manifest(store, "grids/g1").files == manifest.files
    verify_artifact(store, "grids/g1")
    assert sorted(manifest.files)[:3] == [
        "cells/grid_d1.0_d0.0_v.0.params",
        "cells/grid_d1.0_d0.0_v.0.wav",
        "cells/grid_d1.0_d0.1_v.0.params",
    ]
    assert len(manifest.files) == 12 * 2 + 3  # + grid.json, latents.pt, mosaic.png
    dur = T / SR
    for i in range(3):
        for j in range(4):
            name = f"grid_d1.{i}_d0.{j}_v.0"
            text = store.get_bytes(f"grids/g1/cells/{name}.params").decode()
            doc = json.loads(text)
            expected = seed_params(f"{name}.wav", i, j, 4, 3, dur)
            assert list(doc) == list(expected)  # meta first, then dim0, dim1, envPt
            for key in expected:
                assert list(doc[key]) == list(expected[key])  # paramManager's field order
                for fld in expected[key]:
                    assert (
                        doc[key][fld] == pytest.approx(expected[key][fld], abs=1e-12)
                        if isinstance(expected[key][fld], list)
                        else doc[key][fld] == expected[key][fld]
                    ), (key, fld)
            assert text == json.dumps(doc, indent=4)  # paramManager's exact layout (indent 4, no newline)
            assert read_params(text).params["dim0"].values == [j / 3, j / 3]
            audio, sr = sf.read(io.BytesIO(store.get_bytes(f"grids/g1/cells/{name}.wav")))
            assert sr == SR and len(audio) == T
    doc = json.loads(store.get_bytes("grids/g1/grid.json"))
    assert (doc["d0"], doc["d1"], doc["model"], doc["interpolation"], doc["duration"]) == (4, 3, "gan/m", "linear", dur)
    assert doc["mosaic"]["file"] == "mosaic.png" and store.get_bytes("grids/g1/mosaic.png")[:4] == b"\x89PNG"
    from PIL import Image

    img = Image.open(io.BytesIO(store.get_bytes("grids/g1/mosaic.png")))
    assert img.size == (4 * doc["mosaic"]["tile_width"], 3 * doc["mosaic"]["tile_height"])
    assert torch.equal(torch.load(io.BytesIO(store.get_bytes("grids/g1/latents.pt")), weights_only=True), z)


def test_linearized_grid_and_variations(file_store):
    """The SOM hands over a [d1, d0, dim] tensor that is no 2D4pt grid; variations arrive as [d1, d0, K, dim]."""
    lin = torch.randn(3, 2, 5)
    m = render_grid(
        file_store,
        "som/s1/grid",
        lin,
        tone,
        model="gan/m",
        sample_rate=SR,
        inputs=["som/s1"],
        kind="som-grid",
        pm=False,
        service="som",
    )
    assert m.kind == "som-grid" and not [f for f in m.files if f.endswith(".params")]
    assert len([f for f in m.files if f.endswith(".wav")]) == 6
    var = torch.randn(2, 2, 3, 5)
    m = render_grid(file_store, "grids/v", var, tone, model="gan/m", sample_rate=SR, inputs=[])
    assert "cells/grid_d1.1_d0.1_v.2.wav" in m.files and "cells/grid_d1.1_d0.1_v.2.params" in m.files


@pytest.mark.parametrize("fail", ["render", "progress"])
def test_failed_render_leaves_nothing(store, fail):
    calls = []

    def render(z):
        calls.append(len(z))
        if fail == "render" and len(calls) == 3:
            raise RuntimeError("GAN went away")
        return tone(z)

    def progress(done, total):
        if fail == "progress" and done >= 8:
            raise Cancelled("stop")

    with pytest.raises((RuntimeError, Cancelled)):
        render_grid(
            store,
            "grids/broken",
            torch.randn(4, 4, 3),
            render,
            model="gan/m",
            sample_rate=SR,
            inputs=[],
            batch_size=4,
            on_progress=progress,
        )
    assert len(calls) >= 2  # it did write cells before failing
    assert store.list("grids/broken") == []


def test_bad_latents(file_store):
    from smf.common.errors import InvalidArgument

    for bad, field in (
        (torch.randn(1, 3, 4), "d1"),
        (torch.randn(3, 3), "latents"),
        (torch.full((2, 2, 3), float("nan")), "latents"),
    ):
        with pytest.raises(InvalidArgument) as err:
            render_grid(file_store, "grids/bad", bad, tone, model="gan/m", sample_rate=SR, inputs=[])
        assert err.value.field == field
    with pytest.raises(InvalidArgument) as err:
        render_grid(
            file_store,
            "grids/bad",
            torch.randn(2, 2, 3),
            lambda z: np.zeros((1, 5)),
            model="gan/m",
            sample_rate=SR,
            inputs=[],
        )
    assert err.value.field == "render_fn"
    assert file_store.list("grids") == []
