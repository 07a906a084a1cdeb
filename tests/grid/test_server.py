"""GridService over real gRPC: CreateGrid on a tiny trained GAN (two replicas) -> cells in the S3 store with a
manifest; GetGrid / ListGrids; bad input is INVALID_ARGUMENT naming the field and leaves nothing behind."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from smf.common.errors import AlreadyExists, InvalidArgument, NotFound
from smf.common.lineage import read_manifest, verify_artifact
from smf.common.params import grid_cell_params, params_dict, read_params
from smf.common.store import open_store
from smf.grid.grid import grid_latents


def test_create_grid_writes_cells_params_and_manifest(services, small_grid):
    store = services.store
    assert store.uri.startswith("s3://")
    manifest = read_manifest(store, small_grid)
    assert manifest.kind == "grid"
    assert manifest.inputs == ["gan/tiny", services.sample_artifact]  # lineage: model + corner samples
    verify_artifact(store, small_grid)
    doc = json.loads(store.get_bytes(f"{small_grid}/grid.json"))
    assert (doc["d0"], doc["d1"], doc["variations"], doc["model"]) == (5, 3, 1, "gan/tiny")
    assert [(c["i"], c["j"]) for c in doc["cells"]] == [(i, j) for i in range(3) for j in range(5)]
    for c in doc["cells"]:
        assert c["file"] == f"cells/grid_d1.{c['i']}_d0.{c['j']}_v.0.wav"
        assert c["file"] in manifest.files and c["params"] in manifest.files
    assert {"grid.json", "latents.pt", "mosaic.png"} <= set(manifest.files)
    assert len([f for f in manifest.files if f.endswith(".wav")]) == 15

    # the latents are exactly the 2D4pt grid of the corner samples' latents
    corners = [torch.load(io.BytesIO(store.get_bytes(f"{c}.pt")), weights_only=True) for c in services.corners]
    latents = torch.load(io.BytesIO(store.get_bytes(f"{small_grid}/latents.pt")), weights_only=True)
    assert torch.equal(latents, grid_latents(*corners, d0=5, d1=3))

    # each wav is the GAN's rendering of its latent; the .params are the paramManager 2D4pt files
    audio, sr = sf.read(io.BytesIO(store.get_bytes(f"{small_grid}/cells/grid_d1.2_d0.4_v.0.wav")))
    assert sr == doc["sample_rate"] == 16000 and audio.ndim == 1 and len(audio) / sr == pytest.approx(doc["duration"])
    assert np.abs(audio).max() > 0
    pf = read_params(store.get_bytes(f"{small_grid}/cells/grid_d1.1_d0.3_v.0.params"))
    expected = grid_cell_params("grid_d1.1_d0.3_v.0.wav", 1, 3, 5, 3, doc["duration"])
    assert params_dict(pf) == params_dict(expected)
    assert pf.params["dim0"].values == [0.75, 0.75] and pf.params["dim1"].values == [0.5, 0.5]
    assert store.get_bytes(f"{small_grid}/mosaic.png")[:4] == b"\x89PNG"


def test_render_spreads_over_both_gan_replicas(services, grid_client, small_grid):
    """Each replica served part of the grid (the GAN batchers count their forward passes)."""
    gan = services.servicer.gan
    assert len(gan.stubs) == 2
    before = [g.batcher.batches for g in services.gan_servicers]
    op = grid_client.create_grid("tiny", services.corners, d0=4, d1=4, pm=False, variations=2)
    op = grid_client.wait(op.id, timeout=300)
    gid = op.result_uris[0].split(services.store.uri + "/", 1)[1]
    manifest = read_manifest(services.store, gid)
    assert len([f for f in manifest.files if f.endswith(".wav")]) == 32
    assert not [f for f in manifest.files if f.endswith(".params")]
    assert op.progress.step == op.progress.total == 32
    after = [g.batcher.batches for g in services.gan_servicers]
    assert all(a > b for a, b in zip(after, before, strict=False)), (before, after)


def test_get_and_list_grids(services, grid_client, small_grid):
    grid = grid_client.get_grid(small_grid)
    assert grid.artifact.id == small_grid and (grid.d0, grid.d1) == (5, 3) and grid.model == "gan/tiny"
    assert len(grid.cells) == 15 and grid.cells[7].i == 1 and grid.cells[7].j == 2
    assert grid.cells[7].dim0 == 0.5 and grid.cells[7].dim1 == 0.5
    assert grid.cells[7].wav_uri == services.store.key_uri(f"{small_grid}/cells/grid_d1.1_d0.2_v.0.wav")
    assert list(grid.corners) == services.corners
    assert grid_client.get_grid(small_grid.split("/", 1)[1]).artifact.id == small_grid  # bare id works too
    listed = [g.artifact.id for g in grid_client.list_grids()]
    assert small_grid in listed
    assert grid_client.list_grids(model="nope") == []
    with pytest.raises(NotFound):
        grid_client.get_grid("grids/does-not-exist")


def _grids(store) -> set[str]:
    return {k.split("/")[1] for k in store.list("grids")}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"d0": 1}, "d0"),
        ({"d1": 0}, "d1"),
        ({"d0": 100000}, "d0"),
        ({"d1": 257}, "d1"),
        ({"variations": 99}, "variations"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"grid_id": "../escape"}, "grid_id"),
    ],
)
def test_bad_shape_is_invalid_argument(services, grid_client, change, field):
    before = _grids(services.store)
    kw = {"d0": 3, "d1": 3, **change}
    with pytest.raises(InvalidArgument) as err:
        grid_client.create_grid("tiny", services.corners, **kw)
    assert err.value.field == field
    assert _grids(services.store) == before


def test_bad_corners_are_invalid_argument(services, grid_client):
    store = services.store
    before = _grids(store)
    good = services.corners
    z = torch.load(io.BytesIO(store.get_bytes(f"{good[0]}.pt")), weights_only=True)
    cases = [
        (good[:3], "corners"),  # three corners
        ([good[0], good[1], "samples/nothing-here/0", good[3]], "corners[2]"),
        ([good[0], good[1], good[2], [float("nan")] * len(z)], "corners[3]"),  # NaN
        ([good[0], [0.0] * (len(z) + 3), good[2], good[3]], "corners[1]"),  # wrong dimension
        ([[0.0] * 5] * 4, "corners[0]"),  # all inline, wrong size for the model
    ]
    for corners, field in cases:
        with pytest.raises(InvalidArgument) as err:
            grid_client.create_grid("tiny", corners, d0=3, d1=3)
        assert err.value.field == field, (corners, err.value)
    # inline latents of the right size but no model named anywhere
    with pytest.raises(InvalidArgument) as err:
        grid_client.create_grid("", [z.tolist()] * 4, d0=3, d1=3)
    assert err.value.field == "model"
    assert _grids(store) == before


def test_corners_from_another_model_are_refused(services, grid_client):
    """A sample made by another model (its manifest says so) cannot be a corner of a gan/tiny grid."""
    from smf.common.lineage import write_artifact

    store = services.store
    z = store.get_bytes(f"{services.corners[0]}.pt")
    other = "samples/from-another-model"
    write_artifact(store, "samples", other, {"0.pt": z}, config={"model": "gan/other"}, inputs=["gan/other"])
    before = _grids(store)
    with pytest.raises(InvalidArgument) as err:
        grid_client.create_grid("tiny", [*services.corners[:3], f"{other}/0"], d0=3, d1=3)
    assert err.value.field == "corners[3]" and "gan/other" in err.value.message
    with pytest.raises(InvalidArgument) as err:  # no model given: the corners must agree among themselves
        grid_client.create_grid("", [*services.corners[:3], f"{other}/0"], d0=3, d1=3)
    assert err.value.field == "corners[3]"
    with pytest.raises(NotFound):
        grid_client.create_grid("no-such-model", [torch.load(io.BytesIO(z)).tolist()] * 4, d0=3, d1=3)
    assert _grids(store) == before


def test_existing_grid_id_is_refused(services, grid_client, small_grid):
    with pytest.raises(InvalidArgument) as err:
        grid_client.create_grid("tiny", services.corners, d0=3, d1=3, grid_id=small_grid)
    assert err.value.field == "grid_id"


def test_cancelled_render_leaves_nothing(services, grid_client):
    """A render cancelled half-way deletes the cells it wrote: no manifest, no files."""
    from smf.common.client import call
    from smf.common.errors import Cancelled
    from smf.common.v1 import operations_pb2, operations_pb2_grpc

    op = grid_client.create_grid("tiny", services.corners, d0=16, d1=16, pm=True, grid_id="cancelled-one")
    ops = operations_pb2_grpc.OperationServiceStub(grid_client.channel)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cur = call(ops.GetOperation, operations_pb2.GetOperationRequest(operation_id=op.id)).operation
        if cur.progress.step > 0 or cur.done:
            break
        time.sleep(0.05)
    call(ops.CancelOperation, operations_pb2.CancelOperationRequest(operation_id=op.id))
    with pytest.raises(Cancelled):
        grid_client.wait(op.id, timeout=120)
    assert services.store.list("grids/cancelled-one") == []


def test_token_is_required(services):
    from smf.common.errors import Unauthenticated
    from smf.grid.client import GridClient

    with GridClient(f"127.0.0.1:{services.grid_port}", token="wrong") as client, pytest.raises(Unauthenticated):
        client.list_grids()


def test_existing_grid_render_refused_by_render_grid(services, small_grid):
    from smf.grid.render import render_grid

    with pytest.raises(AlreadyExists):
        render_grid(
            services.store,
            small_grid,
            torch.zeros(2, 2, 4),
            lambda z: np.zeros((len(z), 8)),
            model="gan/tiny",
            sample_rate=8000,
            inputs=[],
        )
    assert open_store(services.store.uri).exists(f"{small_grid}/manifest.json")
