"""PipelineService over a real loopback gRPC channel with auth, running the test-size pipeline (configs/tiny.json)
through real services spawned on loopback.

Checks: a run is an operation whose progress counts stages; GetPipeline shows every stage done and the report is in
the store; a second start of the same name while it runs is FAILED_PRECONDITION; starting the finished pipeline
again (config from the store, the server's own services) does no work; bad configs are INVALID_ARGUMENT naming the
key before any operation starts; no or a wrong token is UNAUTHENTICATED.
"""

from __future__ import annotations

import json
import time

import pytest
from smf.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from smf.common.store import open_store
from smf.pipeline.client import PipelineClient
from smf.pipeline.config import DEMO_CONFIG
from smf.pipeline.pipeline import STAGES
from smf.pipeline.server import SERVICE_NAMES, PipelineServicer, servicers
from smf.pipeline.services import local_services
from smf.pipeline.v1 import pipeline_pb2
from support.loopback import loopback_server

TINY = DEMO_CONFIG.parent / "tiny.json"
TOKEN = "pipeline-test-token"


def _server(servicer: PipelineServicer):
    return loopback_server("pipeline", servicers(servicer), SERVICE_NAMES, TOKEN)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-server")
    store = open_store(f"file://{root}/store")
    with local_services(store.uri, log_dir=root / "logs") as svc:
        # the server's default services are the spawned ones; the first run names them explicitly instead
        servicer = PipelineServicer(store, targets=svc.targets, token=svc.token)
        with _server(servicer) as srv, PipelineClient(f"127.0.0.1:{srv.port}", token=TOKEN) as client:
            seen = []
            t0 = time.monotonic()
            op = client.start(TINY, remote=svc.targets)
            with pytest.raises(FailedPrecondition, match="already running") as busy:
                client.start(TINY)
            first = client.wait(op.id, on_progress=seen.append, timeout=900)
            first_s = time.monotonic() - t0
            got = client.get("tiny")
            before = {k: store.stat(k).sha256 for k in store.list()}
            # the same config again, this time from the store and on the server's own services
            store.put_bytes("configs/tiny.json", TINY.read_bytes())
            t0 = time.monotonic()
            again = client.wait(client.start(config_uri=store.key_uri("configs/tiny.json")).id, timeout=300)
            again_s = time.monotonic() - t0
            after = {k: store.stat(k).sha256 for k in store.list() if not k.startswith("configs/")}
            got_again, listed = client.get("tiny"), client.list()
    print(f"\nPipelineService tiny run: first {first_s:.1f} s, again {again_s:.1f} s")
    return {
        "store": store,
        "op": op,
        "first": first,
        "seen": seen,
        "got": got,
        "busy": busy.value,
        "again": again,
        "got_again": got_again,
        "listed": listed,
        "before": before,
        "after": after,
        "again_s": again_s,
    }


def test_run_is_an_operation_with_stage_progress(run):
    op, first, seen = run["op"], run["first"], run["seen"]
    assert op.kind == "pipeline.run" and op.metadata["pipeline"] == "tiny" and op.metadata["services"] == "remote"
    assert first.done and first.progress.step == first.progress.total == len(STAGES)
    steps = [o.progress.step for o in seen]
    assert steps == sorted(steps) and len(set(steps)) > 3
    assert all(o.progress.total == len(STAGES) for o in seen if o.progress.step)
    assert any(o.progress.message.startswith(f"gan (2/{len(STAGES)})") for o in seen)  # the long stage shows up by name
    assert "tiny" in str(run["busy"]) and op.id in str(run["busy"])


def test_result_uris_start_with_the_report_which_exists(run):
    store, uris = run["store"], list(run["first"].result_uris)
    assert uris[0] == store.key_uri("pipelines/tiny/report.html")
    assert store.exists("pipelines/tiny/report.html")
    assert len(uris) >= 5 and all(u.startswith(store.uri + "/") for u in uris)
    assert "<html" in store.get_bytes("pipelines/tiny/report.html").decode().lower()


def test_get_pipeline_shows_every_stage_done(run):
    p, store = run["got"], run["store"]
    assert p.name == "tiny" and p.status == pipeline_pb2.PIPELINE_STATUS_SUCCEEDED and p.operation_id == ""
    assert [s.name for s in p.stages] == list(STAGES)
    for s in p.stages:
        assert s.state == pipeline_pb2.STAGE_STATE_DONE and len(s.key) == 64 and s.seconds >= 0, s
        assert s.artifact_uris and all(
            store.exists(u[len(store.uri) + 1 :] + "/manifest.json") for u in s.artifact_uris
        ), s
    assert p.report_uri == run["first"].result_uris[0]
    assert list(p.ran) == list(STAGES) and list(p.skipped) == []


def test_second_start_of_a_finished_pipeline_does_no_work(run):
    again, p = run["again"], run["got_again"]
    assert again.done and list(again.result_uris) == list(run["first"].result_uris)
    assert list(p.ran) == [] and list(p.skipped) == list(STAGES)
    changed = {k for k in set(run["before"]) | set(run["after"]) if run["before"].get(k) != run["after"].get(k)}
    assert changed <= {"pipelines/tiny/state.json"}, changed
    assert run["again_s"] < 10
    assert [x.name for x in run["listed"]] == ["tiny"]


# ---- checks that need no services ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    """A server with no services at all: nothing it is asked here may get as far as running."""
    store = open_store(f"file://{tmp_path_factory.mktemp('pipeline-idle')}/store")
    servicer = PipelineServicer(store, targets={s: "127.0.0.1:9" for s in ("gan", "grid", "som", "rnn")})
    with _server(servicer) as srv:
        yield servicer, srv.port, store


def _tiny() -> dict:
    return json.loads(TINY.read_text())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["grid"].update(d0=1), "grid.d0"),
        (lambda c: c.update(gird={"d0": 3}), "gird"),
        (lambda c: c["gestures"][0].update(columns=["ramp:0,1"]), "gestures[0].columns"),
        (lambda c: c.update(gan="demo-gan.json"), "gan"),
        (lambda c: c.update(dataset={"folder": "relative/sounds"}), "dataset.folder"),
        (lambda c: c.update(name="no spaces"), "name"),
    ],
)
def test_bad_config_is_invalid_argument_naming_the_key(idle, change, field):
    servicer, port, _ = idle
    cfg = _tiny()
    change(cfg)
    with PipelineClient(f"127.0.0.1:{port}", token=TOKEN) as client, pytest.raises(InvalidArgument) as err:
        client.start(json.dumps(cfg))
    assert field in err.value.message
    assert servicer.registry.list() == []  # checked before any operation started


def test_bad_request_fields(idle):
    servicer, port, _ = idle
    with PipelineClient(f"127.0.0.1:{port}", token=TOKEN) as client:
        with pytest.raises(InvalidArgument, match="config_json: not valid JSON"):
            client.start("{not json")
        with pytest.raises(InvalidArgument, match="give config_json"):
            client.start()
        with pytest.raises(InvalidArgument, match="remote: .*missing \\['som', 'rnn'\\]"):
            client.start(_tiny(), remote={"gan": "h:1", "grid": "h:2"})
        with pytest.raises(InvalidArgument, match="name"):
            client.start(_tiny(), name="../x")
        # a caller cannot point the pipeline (and the services' token it sends) at hosts of its own
        elsewhere = {"gan": "evil:1", "grid": "evil:2", "som": "evil:3", "rnn": "evil:4"}
        with pytest.raises(PermissionDenied, match="remote.gan: evil:1 is not a service this server may call"):
            client.start(_tiny(), remote=elsewhere)
        with pytest.raises(NotFound, match="config_uri"):
            client.start(config_uri="configs/missing.json")
        with pytest.raises(NotFound, match="never ran"):
            client.get("nothing")
        assert client.list() == []
    assert servicer.registry.list() == []


def test_unauthenticated(idle, monkeypatch):
    _, port, _ = idle
    monkeypatch.delenv("SMF_TOKEN", raising=False)
    for token in (None, "wrong"):
        with PipelineClient(f"127.0.0.1:{port}", token=token) as client, pytest.raises(Unauthenticated):
            client.start(_tiny())
        with PipelineClient(f"127.0.0.1:{port}", token=token) as client, pytest.raises(Unauthenticated):
            client.list()
