"""Long-running operations: registry lifecycle, progress/ETA, failures, cancellation, history, external work, and
OperationService over a real gRPC channel (watch streams, wait_operation)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest
from smf.common import errors
from smf.common.client import connect, wait_operation
from smf.common.operations import ExternalStatus, OperationRegistry, OperationServicer
from smf.common.v1 import common_pb2, operations_pb2, operations_pb2_grpc
from support.loopback import loopback_server

Op = common_pb2.Operation
TOKEN = "ops-token"


def stepper(n=5, delay=0.05, uris=("file:///store/x",)):
    def fn(ctx):
        for i in range(n):
            time.sleep(delay)
            ctx.report(step=i + 1, total=n, loss=1.0 / (i + 1), message=f"step {i + 1}/{n}", metrics={"lr": 0.1})
        return list(uris)

    return fn


@pytest.fixture
def registry():
    return OperationRegistry()


@pytest.fixture
def served(registry):
    srv = loopback_server(
        "ops",
        [(operations_pb2_grpc.add_OperationServiceServicer_to_server, OperationServicer(registry))],
        ["smf.common.v1.OperationService"],
        TOKEN,
    ).start()
    channel = connect(f"127.0.0.1:{srv.port}", token=TOKEN)
    yield channel, operations_pb2_grpc.OperationServiceStub(channel)
    channel.close()
    srv.stop()


def test_success_with_progress_and_eta(registry):
    op = registry.start("test.steps", stepper(n=20, delay=0.05), metadata={"run": "r1"})
    assert op.state in (Op.STATE_PENDING, Op.STATE_RUNNING) and op.id.startswith("op-")
    deadline = time.monotonic() + 10
    while (mid := registry.get(op.id)).progress.step < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert mid.state == Op.STATE_RUNNING and mid.progress.step < 20
    # computed from the observed step rate (~20 steps/s): roughly the time the remaining steps take
    assert 0 < mid.progress.eta_seconds < 10
    done = registry.wait(op.id, timeout=10)
    assert done.state == Op.STATE_SUCCEEDED and done.done
    assert list(done.result_uris) == ["file:///store/x"]
    assert (done.progress.step, done.progress.total, done.progress.message) == (20, 20, "step 20/20")
    assert done.progress.metrics["lr"] == pytest.approx(0.1)
    assert done.metadata["run"] == "r1" and done.update_time.ToNanoseconds() >= done.create_time.ToNanoseconds()


def test_failures_map_to_codes(registry, caplog):
    def bad_arg(ctx):
        raise errors.InvalidArgument("d0", "must be >= 2")

    def bug(ctx):
        raise ZeroDivisionError("oops")

    op = registry.wait(registry.start("t", bad_arg).id, timeout=5)
    assert op.state == Op.STATE_FAILED
    assert (op.error.code, op.error.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "d0: must be >= 2")
    with caplog.at_level(logging.ERROR, logger="smf.operations"):
        op = registry.wait(registry.start("t", bug).id, timeout=5)
    assert op.state == Op.STATE_FAILED and op.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert any(r.exc_info and isinstance(r.exc_info[1], ZeroDivisionError) for r in caplog.records)


def test_cancel_running_and_pending():
    registry = OperationRegistry(max_running=1)
    started = threading.Event()

    def until_cancelled(ctx):
        started.set()
        while not ctx.sleep(0.02):
            pass
        return ["partial"]

    running = registry.start("t", until_cancelled)
    assert started.wait(5)
    pending = registry.start("t", stepper(n=1))  # waits for the single worker slot
    assert registry.get(pending.id).state == Op.STATE_PENDING
    assert registry.cancel(pending.id).state == Op.STATE_CANCELLED  # never started
    registry.cancel(running.id)
    op = registry.wait(running.id, timeout=5)
    assert op.state == Op.STATE_CANCELLED and op.done
    # cancelling something finished changes nothing
    assert registry.cancel(running.id).state == Op.STATE_CANCELLED
    with pytest.raises(errors.NotFound):
        registry.cancel("op-nope")


def test_bounded_history_and_list():
    registry = OperationRegistry(max_history=3)
    ids = [registry.start("a" if i % 2 else "b", stepper(n=1, delay=0)).id for i in range(5)]
    for op_id in ids[-3:]:
        registry.wait(op_id, timeout=5)
    time.sleep(0.1)
    listed = registry.list()
    assert len(listed) == 3 and [o.id for o in listed] == ids[::-1][:3]  # newest first
    with pytest.raises(errors.NotFound):
        registry.get(ids[0])
    assert {o.kind for o in registry.list(kind="a")} == {"a"}
    assert registry.list(active_only=True) == []


def test_external_operation_follows_polls():
    statuses = iter(
        [
            ExternalStatus("pending"),
            ExternalStatus.from_progress({"step": 10, "total": 100, "loss": 0.5, "state": "running"}),
            ExternalStatus.from_progress(
                {"step": 100, "total": 100, "state": "succeeded", "result_uris": ["s3://b/gan/run1"]}
            ),
        ]
    )
    registry = OperationRegistry()
    op = registry.wait(registry.start_external("gan.train", lambda: next(statuses), interval=0.01).id, timeout=5)
    assert op.state == Op.STATE_SUCCEEDED and list(op.result_uris) == ["s3://b/gan/run1"]
    assert op.progress.step == 100

    failing = registry.start_external(
        "gan.train",
        lambda: ExternalStatus("failed", error="config: unknown key 'foo'", error_code="INVALID_ARGUMENT"),
        interval=0.01,
    )
    op = registry.wait(failing.id, timeout=5)
    assert op.state == Op.STATE_FAILED and op.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "unknown key" in op.error.message


def test_external_cancel_calls_on_cancel_and_waits_until_gone():
    stopped = threading.Event()
    registry = OperationRegistry()
    op = registry.start_external(
        "rnn.train",
        lambda: ExternalStatus("failed" if stopped.is_set() else "running"),
        interval=0.01,
        on_cancel=stopped.set,
    )
    time.sleep(0.05)
    registry.cancel(op.id)
    op = registry.wait(op.id, timeout=5)
    assert stopped.is_set() and op.state == Op.STATE_CANCELLED


def test_cancel_all_stops_owned_external_work_and_leaves_the_rest_running():
    class Job:  # the two kinds of JobHandle, as far as the registry can tell: does the job die with us?
        def __init__(self, owned):
            self.owned_by_process, self.stopped = owned, threading.Event()

        def cancel(self):
            time.sleep(0.2)  # the trainer checkpoints before it is gone: cancel_all must wait for that
            self.stopped.set()

    registry = OperationRegistry()
    local, k8s = Job(owned=True), Job(owned=False)
    ops = {
        job: registry.start_external(
            "gan.train",
            lambda j=job: ExternalStatus("failed" if j.stopped.is_set() else "running"),
            interval=0.05,
            on_cancel=job.cancel,
        )
        for job in (local, k8s)
    }
    in_process = registry.start("grid.render", lambda ctx: ctx.sleep(30) and [])
    time.sleep(0.1)
    registry.cancel_all(grace=5)
    assert local.stopped.is_set() and registry.get(ops[local].id).state == Op.STATE_CANCELLED  # done on return
    assert registry.wait(in_process.id, timeout=5).state == Op.STATE_CANCELLED
    time.sleep(0.2)
    assert not k8s.stopped.is_set() and registry.get(ops[k8s].id).state == Op.STATE_RUNNING


# A trainer stand-in: traps SIGTERM like smf.<kind>.train, "checkpoints" (takes a moment) and exits.
TRAPPER = """
import os, pathlib, signal, sys, time
work = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(0.5)
    (work / "sigterm").write_text("checkpoint written")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(work / "started").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

SERVER = """
import sys
from smf.common import jobs
from smf.common.operations import OperationRegistry, OperationServicer
from smf.common.server import run_server
from smf.common.v1 import operations_pb2_grpc

work = sys.argv[1]
registry = OperationRegistry()
job = jobs.launch("gan", [work], name="trapper", module="trapper", env={"PYTHONPATH": work},
                  backend=jobs.LocalBackend(job_dir=f"{work}/jobs"))
op = registry.start_external("gan.train", lambda: jobs.poll_job(job), interval=0.2, on_cancel=job.cancel)
run_server(name="ops", servicers=[(operations_pb2_grpc.add_OperationServiceServicer_to_server,
                                   OperationServicer(registry))],
           service_names=["smf.common.v1.OperationService"], port=0, metrics_port=None, host="127.0.0.1",
           grace=2, on_stop=[registry.cancel_all])
print("operation", registry.get(op.id).state == 5, "job", job.status(), job.proc.returncode, flush=True)
"""


def test_sigterm_stops_the_local_training_job_before_exit(tmp_path):
    (tmp_path / "trapper.py").write_text(textwrap.dedent(TRAPPER))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SMF_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert "serving on port" in server.stdout.readline()
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and server.poll() is None, "the training job never started"
            time.sleep(0.05)
        pid = int((tmp_path / "started").read_text())
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        out = server.stdout.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert (tmp_path / "sigterm").read_text() == "checkpoint written"  # the trainer got SIGTERM and checkpointed
    assert "operation True job failed 0" in out, out  # CANCELLED; exited 0 after the checkpoint, reaped by us
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"training job {pid} outlived its server")


def test_grpc_watch_streams_until_done(registry, served):
    _, stub = served
    gate = threading.Event()

    def gated(ctx):
        gate.wait(5)
        return stepper(n=4, delay=0.05)(ctx)

    op = registry.start("t", gated)
    stream = stub.WatchOperation(operations_pb2.WatchOperationRequest(operation_id=op.id), timeout=10)
    first = next(stream).operation
    assert not first.done
    gate.set()
    rest = [r.operation for r in stream]  # the stream ends by itself after the final state
    assert rest[-1].state == Op.STATE_SUCCEEDED and rest[-1].done
    steps = [o.progress.step for o in rest]
    assert steps == sorted(steps) and len(rest) >= 3  # several updates, in order
    assert all(not o.done for o in rest[:-1])


def test_grpc_watch_does_not_busy_poll(registry, served):
    _, stub = served
    gate = threading.Event()
    op = registry.start("t", lambda ctx: gate.wait(5) and [])
    stream = stub.WatchOperation(operations_pb2.WatchOperationRequest(operation_id=op.id), timeout=10)
    messages = [next(stream)]
    threading.Timer(0.5, gate.set).start()
    messages += list(stream)
    # nothing changed for 0.5 s: besides the first snapshot (and RUNNING), only the final state arrives
    assert len(messages) <= 3 and messages[-1].operation.state == Op.STATE_SUCCEEDED


def test_grpc_get_cancel_list_and_wait_operation(registry, served):
    channel, stub = served
    with pytest.raises(grpc.RpcError) as info:
        stub.GetOperation(operations_pb2.GetOperationRequest(operation_id="op-missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    seen = []
    op = registry.start("t", stepper(n=3, delay=0.03))
    done = wait_operation(channel, op.id, on_progress=seen.append, timeout=10)
    assert done.state == Op.STATE_SUCCEEDED and seen[-1].done
    assert stub.GetOperation(operations_pb2.GetOperationRequest(operation_id=op.id)).operation.done

    failing = registry.start("t", lambda ctx: (_ for _ in ()).throw(errors.FailedPrecondition("no model yet")))
    with pytest.raises(errors.FailedPrecondition, match="no model yet"):
        wait_operation(channel, failing.id, timeout=10)

    forever = registry.start("t", lambda ctx: ctx.sleep(30) and [])
    listed = stub.ListOperations(operations_pb2.ListOperationsRequest(active_only=True)).operations
    assert [o.id for o in listed] == [forever.id]
    stub.CancelOperation(operations_pb2.CancelOperationRequest(operation_id=forever.id))
    with pytest.raises(errors.Cancelled):
        wait_operation(channel, forever.id, timeout=10)
    with pytest.raises(errors.NotFound):
        wait_operation(channel, "op-missing", timeout=5)
