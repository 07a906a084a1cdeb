"""R7 (hostile clients), the commit protocol part: findings 4 and 5 of issue 13 against a real loopback gan server.

- Finding 5: SampleRandom / RenderLatents to the store, cancelled (or past the deadline) after some sounds, left
  objects visible with no manifest, never cleaned; a later render with the same output_id took them into its
  manifest. Now nothing of a cancelled render is visible, its staging is gone, and a later render lists only its own.
- PipelineService's "one run per name" held across servers sharing a store (a claim in the store).
- Finding 7b: ArtifactService Upload of `K` then `K.json/x` or `K/x` (or the reverse) was INTERNAL and left an
  empty folder; now `K.json/x` just works and `K/x` is FAILED_PRECONDITION naming the key, on both backends.
- Finding 4: output_id `gan/fakemodel`, `gan/<run>/ckpt`, `../x` wrote into other kinds' prefixes; now a name is one
  segment inside renders/ and anything else is INVALID_ARGUMENT.
"""

from __future__ import annotations

import hashlib
import threading
import time

import grpc
import pytest
from smf.common.client import connect
from smf.common.commit import Staging
from smf.common.errors import FailedPrecondition, Unavailable
from smf.common.lineage import list_artifacts, read_manifest
from smf.common.operations import OperationRegistry
from smf.common.store import open_store
from smf.gan.runs import load_model
from smf.gan.server import SERVICE_NAMES, GanServicer, servicers
from smf.gan.v1 import gan_pb2, gan_pb2_grpc
from smf.pipeline.config import DEMO_CONFIG
from smf.pipeline.server import PipelineServicer
from smf.pipeline.v1 import pipeline_pb2
from support.loopback import loopback_server

from .helpers import record_figures, wait_for

TOKEN = "r7-commit-token"
TINY = DEMO_CONFIG.parent / "tiny.json"
FIGURES: dict = {}


@pytest.fixture(scope="module")
def gan(gan_store):
    servicer = GanServicer(gan_store, max_batch=8)
    srv = loopback_server("gan", servicers(servicer), SERVICE_NAMES, TOKEN).start()
    channel = connect(f"127.0.0.1:{srv.port}", token=TOKEN, default_timeout=None)
    yield gan_pb2_grpc.GanServiceStub(channel), gan_store
    channel.close()
    srv.stop()


def _visible(store, prefix: str) -> list[str]:
    return store.list(prefix)


def _cut_after(call, n: int) -> int:
    """Read `n` messages of a server stream, then cancel it; returns how many sounds had been announced."""
    got = 0
    for got, _ in enumerate(call, start=1):
        if got >= n:
            call.cancel()
            break
    return got


def _staging_empty(store) -> bool:
    return not [k for k in store.list(".staging") if not k.startswith(".staging/claims/")] and not store.list(
        ".staging/claims"
    )


def test_cancelled_sample_random_leaves_nothing_visible(gan):
    stub, store = gan
    before = _visible(store, "samples")
    call = stub.SampleRandom(gan_pb2.SampleRandomRequest(model="trained", count=1024, seed=1))
    sounds = _cut_after(call, 40)
    t0 = time.monotonic()
    wait_for(lambda: _staging_empty(store), 30, "the cancelled render's staging to be removed", interval=0.05)
    visible = len(_visible(store, "samples")) - len(before)
    FIGURES["cancel_after_40_of_1024"] = {
        "sounds_sent": sounds,
        "objects_visible": visible,
        "staging_gone_after_s": round(time.monotonic() - t0, 2),
    }
    assert visible == 0  # not a single object of the 40 sounds is visible (before the fix: 80, never cleaned)


def test_cancelled_sample_random_on_s3_leaves_nothing_visible(gan_store, s3_store):
    """Finding 5 on an S3 store (SeaweedFS): staged objects are deleted as the stream closes, none ever listed."""
    for key in gan_store.list("gan/trained"):
        s3_store.put_bytes(key, gan_store.get_bytes(key))
    servicer = GanServicer(s3_store, max_batch=8)
    with loopback_server("gan", servicers(servicer), SERVICE_NAMES, TOKEN) as srv:
        channel = connect(f"127.0.0.1:{srv.port}", token=TOKEN, default_timeout=None)
        stub = gan_pb2_grpc.GanServiceStub(channel)
        call = stub.SampleRandom(gan_pb2.SampleRandomRequest(model="trained", count=1024, seed=1))
        _cut_after(call, 40)
        t0 = time.monotonic()
        wait_for(lambda: _staging_empty(s3_store), 30, "the cancelled render's staging to be removed", interval=0.05)
        FIGURES["cancel_after_40_of_1024_s3"] = {
            "objects_visible": len(s3_store.list("samples")),
            "staging_gone_after_s": round(time.monotonic() - t0, 2),
        }
        assert s3_store.list("samples") == []
        done = list(stub.SampleRandom(gan_pb2.SampleRandomRequest(model="trained", count=3, seed=1)))
        aid = done[-1].artifact.id
        assert sorted(read_manifest(s3_store, aid).files) == ["0.pt", "0.wav", "1.pt", "1.wav", "2.pt", "2.wav"]
        channel.close()


def test_render_past_its_deadline_leaves_nothing_and_a_later_render_lists_only_its_own(gan):
    stub, store = gan
    dim = load_model(store, "trained").latent_dim
    z = [gan_pb2.Latent(values=[0.01 * (i % 7)] * dim) for i in range(1024)]
    call = stub.RenderLatents(gan_pb2.RenderLatentsRequest(model="trained", latents=z, output_id="take1"))
    _cut_after(call, 40)
    with pytest.raises(grpc.RpcError) as e:
        for _ in stub.RenderLatents(
            gan_pb2.RenderLatentsRequest(model="trained", latents=z, output_id="take2"), timeout=0.3
        ):
            pass
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: _staging_empty(store), 30, "the cut renders' staging to be removed")
    assert _visible(store, "renders/take1") == [] and _visible(store, "renders/take2") == []
    last = list(stub.RenderLatents(gan_pb2.RenderLatentsRequest(model="trained", latents=z[:3], output_id="take1")))
    assert last[-1].artifact.id == "renders/take1"
    assert sorted(read_manifest(store, "renders/take1").files) == ["0.pt", "0.wav", "1.pt", "1.wav", "2.pt", "2.wav"]
    assert len(_visible(store, "renders/take1")) == 7  # the six and the manifest: no stale file anywhere
    with pytest.raises(grpc.RpcError) as again:
        list(stub.RenderLatents(gan_pb2.RenderLatentsRequest(model="trained", latents=z[:1], output_id="take1")))
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    "bad", ["gan/fakemodel", "gan/trained/ckpt", "samples/x", "datasets/tones", "../x", "a/b", "renders/a/b", "x" * 201]
)
def test_output_id_cannot_reach_another_kind(gan, bad):
    stub, store = gan
    dim = load_model(store, "trained").latent_dim
    models, datasets = list_artifacts(store, "gan"), store.list("datasets")
    with pytest.raises(grpc.RpcError) as e:
        list(
            stub.RenderLatents(
                gan_pb2.RenderLatentsRequest(
                    model="trained", latents=[gan_pb2.Latent(values=[0.0] * dim)], output_id=bad
                )
            )
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "output_id" in e.value.details()
    assert list_artifacts(store, "gan") == models and store.list("datasets") == datasets


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_commit_cost(request, backend):
    """What staging costs: 200 small files (a 10x10 grid with .params) staged, then committed (renames on a file
    store; server-side copies, 8 at a time, on SeaweedFS)."""
    store = request.getfixturevalue(f"{backend}_store")
    t0 = time.monotonic()
    with Staging(store, "grids/cost") as out:
        for i in range(200):
            out.put_bytes(f"cells/{i}.wav", b"RIFF" + bytes(2000))
        t1 = time.monotonic()
        out.commit("grid")
    t2 = time.monotonic()
    assert len(store.list("grids/cost")) == 201
    FIGURES[f"commit_200_files_{backend}"] = {"stage_s": round(t1 - t0, 2), "commit_s": round(t2 - t1, 2)}


def test_figures():
    record_figures("R7-commit", FIGURES)


def test_two_pipeline_servers_sharing_a_store_run_a_name_once(tmp_path, monkeypatch):
    """Issue 13: PipelineService's "one run per name" was per process; two replicas could run one name at once.
    Two servicers share nothing but the store here, as two replicas would."""
    import smf.pipeline.server as pipeline_server

    def unreachable(targets, token=None):  # what the runs meet once started, without 30 s of health polling
        raise Unavailable(f"no services at {targets['gan']}")

    monkeypatch.setattr(pipeline_server, "remote_services", unreachable)
    store = open_store(f"file://{tmp_path}/store")
    nowhere = {s: "127.0.0.1:9" for s in ("gan", "grid", "som", "rnn")}
    registry = OperationRegistry(max_running=1)
    gate = threading.Event()
    blocker = registry.start("blocker", lambda ctx: gate.wait(60) and [])
    first = PipelineServicer(store, targets=nowhere, registry=registry)
    second = PipelineServicer(store, targets=nowhere)
    request = pipeline_pb2.StartPipelineRequest(config_json=TINY.read_text(), name="shared")
    op = first.StartPipeline(request, None).operation  # PENDING behind the blocker, holding the name
    with pytest.raises(FailedPrecondition, match="'shared' is already running on another server"):
        second.StartPipeline(request, None)
    gate.set()
    registry.wait(blocker.id, timeout=30)
    registry.wait(op.id, timeout=120)  # fails (no services), and lets go of the name
    again = second.StartPipeline(request, None).operation
    second.registry.wait(again.id, timeout=120)
    assert store.list(".staging") == []


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_upload_of_k_then_k_slash_x_is_failed_precondition_on_both_backends(request, backend):
    """Finding 7b, as it was found: ArtifactService Upload of `K` then `K.json/x` (or `K/x`), raw protobuf."""
    from smf.artifact.server import ArtifactServicer
    from smf.common.v1 import artifact_pb2, artifact_pb2_grpc

    store = request.getfixturevalue(f"{backend}_store")

    def upload(stub, key: str, data: bytes):
        sha = hashlib.sha256(data).hexdigest()
        header = artifact_pb2.UploadHeader(key=key, sha256=sha, size=len(data))
        msgs = [artifact_pb2.UploadArtifactRequest(header=header), artifact_pb2.UploadArtifactRequest(data=data)]
        return stub.UploadArtifact(iter(msgs), timeout=30)

    add = artifact_pb2_grpc.add_ArtifactServiceServicer_to_server
    with loopback_server("artifact", [(add, ArtifactServicer(store))], ["smf.common.v1.ArtifactService"], TOKEN) as srv:
        channel = connect(f"127.0.0.1:{srv.port}", token=TOKEN)
        stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
        upload(stub, "up/K", b"1")
        upload(stub, "up/K.json/x", b"2")  # was INTERNAL on the file store: the sidecar of K sat at that path
        for first, second in (("up/A", "up/A/x"), ("up/B/x", "up/B")):
            upload(stub, first, b"3")
            with pytest.raises(grpc.RpcError) as e:
                upload(stub, second, b"4")
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and repr(second) in e.value.details()
        with pytest.raises(grpc.RpcError) as e:  # the commit protocol's own keys are not a client's to write
            upload(stub, ".staging/claims/0123", b"5")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and ".staging" in e.value.details()
        channel.close()
    assert store.list("up") == ["up/A", "up/B/x", "up/K", "up/K.json/x"] and store.list(".staging") == []
    if backend == "file":  # and no empty folder or sidecar was left by the refused writes
        assert (store.root / "up/A").is_file() and not (store.root / ".smf-meta/up/.smf-B.json").exists()
        assert not [p for p in (store.root / "up").rglob("*") if p.name.startswith(".smf-tmp")]
