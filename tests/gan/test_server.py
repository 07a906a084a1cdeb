"""GanService over a real loopback gRPC channel and a real store: train -> watch -> checkpoint -> sample, renders,
errors as status codes, micro-batching, the spreading client."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from smf.common.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from smf.common.lineage import read_manifest
from smf.gan.batching import RenderBatcher
from smf.gan.client import GanClient
from smf.gan.runs import load_model
from smf.gan.server import SERVICE_NAMES, GanServicer, servicers
from support.loopback import loopback_server
from support.tiny_gan import tiny_dict

TOKEN = "gan-test-token"


def serve(store, **kw) -> tuple:
    servicer = GanServicer(store, **kw)
    srv = loopback_server("gan", servicers(servicer), SERVICE_NAMES, TOKEN).start()
    return srv, servicer


@pytest.fixture(scope="module")
def server(trained):
    store, _ = trained
    srv, servicer = serve(store)
    yield srv, servicer, store
    srv.stop()
    servicer.close()


@pytest.fixture
def gan(server):
    with GanClient(f"127.0.0.1:{server[0].port}", token=TOKEN) as client:
        yield client


def test_train_watch_checkpoint_sample_round_trip(gan, server, tmp_path, monkeypatch):
    store = server[2]
    monkeypatch.setenv("SMF_JOB_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    op = gan.start_training("roundtrip", tiny_dict())
    steps = []
    done = gan.wait(op.id, on_progress=lambda o: steps.append(o.progress.step), timeout=300)
    assert done.result_uris == [store.key_uri("gan/roundtrip")]
    assert steps[-1] == 24 and done.progress.total == 24
    assert store.exists("gan/roundtrip/ckpt/step-24.pt")
    models = {m.name: m for m in gan.list_models()}
    assert models["roundtrip"].state == "succeeded" and models["roundtrip"].step == 24
    assert models["roundtrip"].latent_dim == 16 and models["roundtrip"].sample_rate == 16000
    out = gan.sample_random("roundtrip", 4, seed=11, output="both")
    assert out.seed == 11 and out.latents.shape == (4, 16) and out.audio.shape == (4, 2048)
    assert read_manifest(store, out.artifact_uri.split(store.uri + "/")[1]).inputs == ["gan/roundtrip"]
    z = torch.load(io.BytesIO(store.get_bytes(out.latent_uris[2].split(store.uri + "/")[1])), weights_only=True)
    np.testing.assert_allclose(z.numpy(), out.latents[2])
    again = gan.sample_random("roundtrip", 4, seed=11, output="inline")
    np.testing.assert_array_equal(again.audio, out.audio)  # seeded: deterministic
    # the same name with another config is refused; the same config resumes (here: already finished)
    with pytest.raises(AlreadyExists):
        gan.start_training("roundtrip", tiny_dict(steps=(7, 6, 6, 6)))


def test_bad_configs_and_latents_are_invalid_argument_naming_the_field(gan):
    cfg = tiny_dict()
    cfg["modelConfig"]["depthScales"] = [32, 32]
    with pytest.raises(InvalidArgument) as err:
        gan.start_training("bad", cfg)
    assert "modelConfig.depthScales" in err.value.message
    cfg = tiny_dict()
    cfg["loaderConfig"]["data_path"] = "datasets/missing"
    with pytest.raises(InvalidArgument) as err:
        gan.start_training("bad", cfg)
    assert "loaderConfig.data_path" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        gan.render_latents("trained", np.zeros((3, 5)))
    assert "latents[0]" in err.value.message
    z = np.zeros((3, 16), np.float32)
    z[1, 4] = math.nan
    with pytest.raises(InvalidArgument) as err:
        gan.render_latents("trained", z)
    assert "latents[1]" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        gan.render_latents("trained", ["samples/none/0.pt"], output="store")
    assert "latent_uris[0]" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        gan.sample_random("trained", 0)
    assert "count" in err.value.message
    with pytest.raises(NotFound):
        gan.sample_random("no-such-model", 1)


def test_render_441_latents_in_batches_inline_and_to_the_store(gan, server):
    _, servicer, store = server
    model = load_model(store, "trained")
    z = model.random_latents(441, seed=5).numpy()
    before = servicer.batcher.batches
    out = gan.render_latents("trained", z, output="inline")
    assert out.audio.shape == (441, 2048) and servicer.batcher.batches - before >= 441 // 32
    np.testing.assert_allclose(out.audio[:8], model.render(torch.from_numpy(z[:8])).numpy(), atol=1e-4)
    stored = gan.render_latents("trained", z[:40], output="store", output_id="test-cells")  # a name in renders/
    assert stored.artifact_uri == store.key_uri("renders/test-cells") and len(stored.wav_uris) == 40
    assert read_manifest(store, "renders/test-cells").config["model"] == "gan/trained"
    by_uri = gan.render_latents("trained", stored.latent_uris[:3], output="inline")
    np.testing.assert_allclose(by_uri.audio, out.audio[:3], atol=1e-4)  # other batch size: float-level diffs


def test_concurrent_requests_share_forward_passes_and_a_full_queue_is_resource_exhausted(trained):
    store, _ = trained
    model = load_model(store, "trained")
    batcher = RenderBatcher(max_batch=32, max_wait_s=0.05, max_queue=64)
    try:
        futures = [batcher.submit(model, model.random_latents(4, seed=i)) for i in range(8)]
        for i, f in enumerate(futures):
            torch.testing.assert_close(
                f.result(60), model.render(model.random_latents(4, seed=i)), atol=1e-4, rtol=1e-3
            )
        assert batcher.batches <= 2  # 8 requests of 4 -> one or two passes of up to 32
        with pytest.raises(ResourceExhausted):
            for _ in range(100):
                batcher.submit(model, model.random_latents(32, seed=0))
    finally:
        batcher.stop()


def test_spreading_client_over_two_replicas(trained):
    store, _ = trained
    (a, sa), (b, sb) = serve(store), serve(store)
    try:
        with GanClient([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], token=TOKEN) as gan:
            z = load_model(store, "trained").random_latents(64, seed=2).numpy()
            out = gan.render_latents("trained", z)
            single = GanClient(f"127.0.0.1:{a.port}", token=TOKEN).render_latents("trained", z)
        np.testing.assert_allclose(out.audio, single.audio, atol=1e-4)
        assert sa.batcher.batches >= 1 and sb.batcher.batches >= 1  # both replicas did work
    finally:
        for srv, s in ((a, sa), (b, sb)):
            srv.stop()
            s.close()
