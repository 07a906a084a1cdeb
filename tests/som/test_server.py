"""SomService over real gRPC with a tiny trained GAN in the loop: GAN replicas, the grid service and its auditioner,
and the SOM service all running on loopback against one file store.

A 4x4 grid made by the grid service is linearized (a few iterations, evenness before/after reported per iteration),
rendered as a som-grid, and opened in the auditioner over HTTP; bad inputs come back as clear status codes.
"""

from __future__ import annotations

import io
import json
import urllib.request

import pytest
import torch
from smf.common.errors import AlreadyExists, Cancelled, FailedPrecondition, InvalidArgument, NotFound
from smf.common.lineage import read_manifest
from smf.common.params import read_params
from smf.common.v1 import operations_pb2, operations_pb2_grpc
from support.loopback import loopback_server
from support.tiny_gan import tiny_dict

TOKEN = "som-test-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two GAN replicas, the grid service + auditioner, the SOM service; a tiny GAN trained in-process first."""
    from smf.common.store import open_store
    from smf.datasets import make_dataset
    from smf.gan.client import GanClient
    from smf.gan.config import parse_config
    from smf.gan.server import SERVICE_NAMES as GAN_NAMES
    from smf.gan.server import GanServicer
    from smf.gan.server import servicers as gan_servicers
    from smf.gan.train import Trainer
    from smf.grid.auditioner import Auditioner
    from smf.grid.client import GridClient
    from smf.grid.server import SERVICE_NAMES as GRID_NAMES
    from smf.grid.server import GridServicer
    from smf.grid.server import servicers as grid_servicers
    from smf.som.client import SomClient
    from smf.som.server import SERVICE_NAMES as SOM_NAMES
    from smf.som.server import SomServicer
    from smf.som.server import servicers as som_servicers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the dev box has 2 shared cores
    store = open_store(f"file://{tmp_path_factory.mktemp('som-store')}")
    make_dataset("tones", store, n_files=12, duration=0.3)
    Trainer(parse_config(tiny_dict()), store, "gan/trained", log=lambda *_: None).run()

    def serve(name, servicer_list, names):
        return loopback_server(name, servicer_list, names, TOKEN).start()

    gan_servicer_objs = [GanServicer(store) for _ in range(2)]
    gan_servers = [serve("gan", gan_servicers(s), GAN_NAMES) for s in gan_servicer_objs]
    targets = [f"127.0.0.1:{s.port}" for s in gan_servers]
    gan_for_grid, gan_for_som = GanClient(targets[0], token=TOKEN), GanClient(targets, token=TOKEN)
    grid_servicer = GridServicer(store, gan_for_grid)
    grid_server = serve("grid", grid_servicers(grid_servicer), GRID_NAMES)
    auditioner = Auditioner(store, token=TOKEN, host="127.0.0.1", port=0).start()
    som_servicer = SomServicer(store, gan_for_som)
    som_server = serve("som", som_servicers(som_servicer), SOM_NAMES)
    clients = {
        "gan": GanClient(targets, token=TOKEN),
        "grid": GridClient(f"127.0.0.1:{grid_server.port}", token=TOKEN),
        "som": SomClient(f"127.0.0.1:{som_server.port}", token=TOKEN),
    }
    yield {"store": store, "auditioner": auditioner, "som_port": som_server.port, **clients}
    for c in clients.values():
        c.close()
    som_server.stop()
    som_servicer.close()
    grid_server.stop()
    grid_servicer.close()
    auditioner.stop()
    gan_for_grid.close()
    gan_for_som.close()
    for srv, s in zip(gan_servers, gan_servicer_objs, strict=False):
        srv.stop()
        s.close()
    torch.set_num_threads(threads)


def make_grid(stack, model="trained", *, d0=4, d1=4, seed=0) -> str:
    out = stack["gan"].sample_random(model, 4, seed=seed, output="store")
    op = stack["grid"].create_grid(model, [u for u in out.latent_uris], d0=d0, d1=d1, pm=True)
    op = stack["grid"].wait(op.id, timeout=120)
    return op.result_uris[0].split(stack["store"].uri + "/")[1]


@pytest.fixture(scope="module")
def grid_id(stack):
    return make_grid(stack)


def http_get(stack, path: str) -> tuple[int, bytes, str]:
    req = urllib.request.Request(stack["auditioner"].url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.read(), resp.headers.get("Content-Type", "")


def test_linearize_then_render_opens_in_the_auditioner(stack, grid_id):
    store, som = stack["store"], stack["som"]
    updates = []
    op = som.start_linearize(grid_id, iterations=4, features="spectrogram")
    assert op.metadata["grid"] == grid_id and op.metadata["model"] == "gan/trained"
    done = som.wait(
        op.id, on_progress=lambda o: updates.append((o.progress.step, o.progress.loss, o.progress.message)), timeout=180
    )
    som_id = done.result_uris[0].split(store.uri + "/")[1]
    assert som_id.startswith("som/")
    steps = [u[0] for u in updates]
    assert steps[-1] >= 1 and done.progress.total == 4
    assert all(u[1] > 0 for u in updates if u[0] > 0)  # loss = the current CoV
    assert any("CoV" in u[2] and "->" in u[2] for u in updates)

    # linearized.pt: [d1, d0, latent_dim], plain tensor, corners pinned to the grid's corners
    z = torch.load(io.BytesIO(store.get_bytes(f"{som_id}/linearized.pt")), weights_only=True)
    z0 = torch.load(io.BytesIO(store.get_bytes(f"{grid_id}/latents.pt")), weights_only=True)
    assert z.shape == (4, 4, 16) and torch.isfinite(z).all()
    for i in (0, -1):
        for j in (0, -1):
            torch.testing.assert_close(z[i, j], z0[i, j], rtol=0, atol=1e-6)
    manifest = read_manifest(store, som_id)
    assert manifest.kind == "som" and manifest.inputs == [grid_id, "gan/trained"]

    # evenness before/after, history and plots through GetLinearization
    lz = som.get(som_id)
    assert lz.before.cov > 0 and lz.after.cov > 0 and lz.before.max_min_ratio >= 1
    assert lz.features == "spectrogram" and lz.rule == "even" and (lz.d0, lz.d1, lz.latent_dim) == (4, 4, 16)
    assert len(lz.history) == lz.iterations + 1 and lz.history[0].evenness.cov == pytest.approx(lz.before.cov)
    for uri in lz.plot_uris:
        assert store.get_bytes(uri.split(store.uri + "/")[1])[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads(store.get_bytes(f"{som_id}/metrics.json"))
    assert metrics["features"]["kind"] == "spectrogram" and "cov_reduction" in metrics
    assert [x.artifact.id for x in som.list(grid_id)] == [som_id]
    assert som_id in [x.artifact.id for x in som.list()]
    assert som.list("grids/not-this-one") == []

    # render: a som-grid exactly like a grid (cells + .params), opened by the grid service and its page
    rop = som.wait(som.start_render(som_id, d0=4, d1=4, pm=True).id, timeout=120)
    new_grid = rop.result_uris[0].split(store.uri + "/")[1]
    gm = read_manifest(store, new_grid)
    assert gm.kind == "som-grid" and gm.inputs == [som_id, "gan/trained"]
    grid = stack["grid"].get_grid(new_grid)
    assert (grid.d0, grid.d1, len(grid.cells)) == (4, 4, 16)
    cell = next(c for c in grid.cells if (c.i, c.j) == (1, 2))
    pf = read_params(store.get_bytes(cell.params_uri.split(store.uri + "/")[1]))
    assert pf.params["dim0"].values[0] == pytest.approx(2 / 3) and pf.params["dim1"].values[0] == pytest.approx(1 / 3)
    assert "envPt" in pf.params
    status, body, ctype = http_get(stack, f"/{new_grid}")
    assert status == 200 and ctype.startswith("text/html")
    status, body, _ = http_get(stack, f"/api/grid?id={new_grid}")
    doc = json.loads(body)
    assert status == 200 and doc["kind"] == "som-grid" and doc["linearization"] == som_id and len(doc["cells"]) == 16
    status, wav, ctype = http_get(stack, f"/api/file?id={new_grid}&name={doc['cells'][5]['file']}")
    assert status == 200 and wav[:4] == b"RIFF"
    from smf.common.audio import load_audio

    audio, sr = load_audio(wav)
    assert sr == 16000 and torch.isfinite(audio).all() and audio.abs().max() > 0


def test_perceptual_features_and_one_axis(stack, grid_id):
    som = stack["som"]
    op = som.wait(
        som.start_linearize(
            grid_id, iterations=2, features="perceptual", axes="dim0", feature_weights={"loudness": 0.5}
        ).id,
        timeout=180,
    )
    lz = som.get(op.result_uris[0])
    assert lz.features == "perceptual" and lz.axes == "dim0" and lz.feature_weights["loudness"] == 0.5
    assert lz.iterations >= 1 and lz.after.cov > 0


def test_bad_requests_are_clear_status_codes(stack, grid_id):
    som = stack["som"]
    with pytest.raises(InvalidArgument) as err:
        som.start_linearize(grid_id, features="timbre")
    assert err.value.field == "features" and "timbre" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        som.start_linearize(grid_id, features="perceptual", feature_weights={"pitch": 1.0})
    assert err.value.field == "feature_weights" and "pitch" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        som.start_linearize(grid_id, rule="fast")
    assert err.value.field == "rule"
    with pytest.raises(InvalidArgument) as err:
        som.start_linearize(grid_id, step=-1.0)
    assert err.value.field == "step"
    with pytest.raises(NotFound) as err:
        som.start_linearize("grids/no-such-grid")
    assert "grids/no-such-grid" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        som.start_linearize("")
    assert err.value.field == "grid_id"
    with pytest.raises(NotFound):
        som.start_render("som/no-such-linearization", d0=4, d1=4)


def test_diverging_step_fails_with_step_and_writes_nothing(stack, grid_id):
    som, store = stack["som"], stack["store"]
    before = set(store.list("som"))
    op = som.start_linearize(grid_id, rule="original", step=1e12, iterations=5, linearization_id="som/diverged")
    with pytest.raises(InvalidArgument) as err:
        som.wait(op.id, timeout=120)
    assert err.value.field == "step" and "diverged" in err.value.message
    assert set(store.list("som")) == before and not store.exists("som/diverged/manifest.json")


def test_d0_d1_must_match_the_linearized_tensor(stack, grid_id):
    som = stack["som"]
    op = som.wait(
        som.start_linearize(grid_id, iterations=1, features="loudness", linearization_id="som/shape-check").id,
        timeout=120,
    )
    assert op.result_uris[0].endswith("som/shape-check")
    with pytest.raises(InvalidArgument) as err:
        som.start_render("som/shape-check", d0=21, d1=4)
    assert err.value.field == "d0" and "d0=4" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        som.start_render("shape-check", d0=4, d1=5)
    assert err.value.field == "d1"
    with pytest.raises(AlreadyExists):
        som.start_linearize(grid_id, linearization_id="som/shape-check")
    # d0 = d1 = 0: the shape comes from the tensor
    rop = som.wait(som.start_render("som/shape-check", pm=False).id, timeout=120)
    assert stack["grid"].get_grid(rop.result_uris[0]).d0 == 4


def test_grid_of_a_deleted_model_is_failed_precondition_naming_it(stack):
    store, som = stack["store"], stack["som"]
    for key in store.list("gan/trained"):  # a second model: a copy of the first, so nothing is trained again
        store.put_bytes("gan/doomed/" + key[len("gan/trained/") :], store.get_bytes(key))
    doomed_grid = make_grid(stack, "doomed", d0=3, d1=3, seed=1)
    lop = som.wait(som.start_linearize(doomed_grid, iterations=1, features="centroid").id, timeout=120)
    store.delete_prefix("gan/doomed")
    with pytest.raises(FailedPrecondition) as err:
        som.start_linearize(doomed_grid, iterations=1)
    assert "gan/doomed" in err.value.message and doomed_grid in err.value.message
    with pytest.raises(FailedPrecondition) as err:
        som.start_render(lop.result_uris[0], d0=3, d1=3)
    assert "gan/doomed" in err.value.message


def test_cancel_stops_the_run_and_stores_nothing(stack, grid_id):
    from smf.common.client import connect

    som, store = stack["som"], stack["store"]
    op = som.start_linearize(
        grid_id, iterations=100000, tolerance=0.0, features="loudness", linearization_id="som/cancelled"
    )
    channel = connect(f"127.0.0.1:{stack['som_port']}", token=TOKEN)
    try:
        stub = operations_pb2_grpc.OperationServiceStub(channel)
        seen = []

        def cancel_after_two(o):
            seen.append(o.progress.step)
            if o.progress.step >= 2 and not getattr(cancel_after_two, "sent", False):
                cancel_after_two.sent = True
                stub.CancelOperation(operations_pb2.CancelOperationRequest(operation_id=op.id), timeout=10)

        with pytest.raises(Cancelled):
            som.wait(op.id, on_progress=cancel_after_two, timeout=120)
    finally:
        channel.close()
    assert not store.exists("som/cancelled/manifest.json")


def test_cli_linearize_render_ls_here_and_remote(stack, grid_id, monkeypatch, capsys):
    from smf.cli import main

    store = stack["store"]
    monkeypatch.setenv("SMF_TOKEN", TOKEN)
    # here: the GAN loaded in-process, the store given by URI
    assert (
        main(
            [
                "som",
                "linearize",
                grid_id,
                "--store",
                store.uri,
                "--iterations",
                "2",
                "--features",
                "loudness",
                "--id",
                "som/from-cli",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "CoV of adjacent distances" in out and store.key_uri("som/from-cli") in out
    assert main(["som", "render", "som/from-cli", "--store", store.uri, "--d0", "4", "--d1", "4", "--pm"]) == 0
    assert "grid: " + store.uri in capsys.readouterr().out
    assert main(["som", "render", "som/from-cli", "--store", store.uri, "--d0", "5", "--d1", "4"]) == 1
    assert "d0" in capsys.readouterr().err
    assert main(["som", "linearize", grid_id, "--store", store.uri, "--features", "timbre"]) == 1
    assert "features" in capsys.readouterr().err
    # remote: the same through the SOM service
    remote = f"127.0.0.1:{stack['som_port']}"
    assert (
        main(
            [
                "som",
                "linearize",
                grid_id,
                "--remote",
                remote,
                "--iterations",
                "1",
                "--features",
                "centroid",
                "--weight",
                "centroid=2",
                "--id",
                "som/remote-cli",
            ]
        )
        == 0
    )
    assert store.key_uri("som/remote-cli") in capsys.readouterr().out
    assert main(["som", "ls", "--remote", remote, "--grid", grid_id]) == 0
    listing = capsys.readouterr().out
    assert "som/remote-cli" in listing and "som/from-cli" in listing
    assert main(["som", "ls", "--store", store.uri]) == 0
    assert "som/remote-cli" in capsys.readouterr().out
