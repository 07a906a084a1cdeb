"""The local job backend with a tiny stand-in trainer, the backend registry, and following a job as an operation."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from smf.common import errors, jobs
from smf.common.operations import OperationRegistry
from smf.common.v1 import common_pb2

FAKE_TRAINER = textwrap.dedent('''
    """Stand-in for smf.<kind>.train: writes progress, obeys SIGTERM (checkpoint + exit) unless told not to."""
    import json, os, signal, subprocess, sys, time, argparse
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--progress")
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--child-pid")
    a = p.parse_args()
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        def on_term(*_):
            print("SIGTERM: checkpoint saved", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
    if a.child_pid:  # a worker process, like a DataLoader worker: cancel must reach it too
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(a.child_pid, "w").write(str(child.pid))
    print("args", sys.argv[1:], "job", os.environ.get("SMF_JOB_ID"), "extra", os.environ.get("EXTRA"), flush=True)
    for step in range(1, a.steps + 1):
        time.sleep(a.delay)
        if a.progress:
            tmp = a.progress + ".tmp"
            json.dump({"step": step, "total": a.steps, "loss": 1.0 / step,
                       "result_uris": ["file:///store/gan/run"] if step == a.steps else []}, open(tmp, "w"))
            os.replace(tmp, a.progress)
    print("done", flush=True)
    sys.exit(a.exit)
''')


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    """Module name of the stand-in trainer, importable by the job's `python -m` via PYTHONPATH."""
    (tmp_path / "fake_trainer.py").write_text(FAKE_TRAINER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SMF_JOB_DIR", str(tmp_path / "jobs"))
    return "fake_trainer"


@pytest.fixture
def backend(tmp_path):
    return jobs.LocalBackend(tmp_path / "jobs")


def test_local_job_succeeds_with_logs(trainer, backend, tmp_path):
    job = jobs.launch("gan", ["--steps", "2"], name="mygan", env={"EXTRA": "yes"}, module=trainer, backend=backend)
    assert job.status() in ("pending", "running", "succeeded")
    assert job.wait(timeout=30) == "succeeded"
    logs = job.logs()
    assert "args ['--steps', '2']" in logs and f"job {job.id}" in logs and "extra yes" in logs and "done" in logs
    assert job.logs(tail=1).strip() == "done"
    assert Path(job.log_path).parent.parent == tmp_path / "jobs"
    assert backend.get(job.id) is job
    with pytest.raises(errors.NotFound):
        backend.get("nope")


def test_local_job_failure(trainer, backend):
    job = jobs.launch("rnn", ["--exit", "3"], name="bad", module=trainer, backend=backend)
    assert job.wait(timeout=30) == "failed" and job.returncode == 3


def test_cancel_sends_sigterm_then_kills_the_process_group(trainer, backend, tmp_path):
    polite = jobs.launch("gan", ["--steps", "1000", "--delay", "0.1"], name="polite", module=trainer, backend=backend)
    _wait_for_log(polite, "args")
    polite.cancel(grace=10)
    assert polite.wait(timeout=15) == "failed"  # cancelled: it did not finish its work
    assert "checkpoint saved" in polite.logs()

    pid_file = tmp_path / "child.pid"
    stubborn = jobs.launch(
        "gan",
        ["--steps", "1000", "--delay", "0.1", "--ignore-term", "--child-pid", str(pid_file)],
        name="stubborn",
        module=trainer,
        backend=backend,
    )
    _wait_for_log(stubborn, "args")
    child = int(pid_file.read_text())
    start = time.monotonic()
    stubborn.cancel(grace=0.5)
    assert stubborn.wait(timeout=10) == "failed"
    assert time.monotonic() - start < 5
    assert stubborn.returncode == -9  # SIGKILL after the grace period
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the job's own worker process must be killed with it"


def test_backend_registry(monkeypatch, trainer):
    monkeypatch.setenv("SMF_JOB_BACKEND", "nope")
    with pytest.raises(errors.FailedPrecondition, match="nope"):
        jobs.launch("gan", [], name="x", module=trainer)

    launched = []

    class Recording(jobs.JobBackend):
        name = "recording"

        def launch(self, spec):
            launched.append(spec)
            return jobs.LocalBackend().launch(spec)

        def get(self, job_id):
            raise errors.NotFound(job_id)

    jobs.register_backend("recording", Recording)
    monkeypatch.setenv("SMF_JOB_BACKEND", "recording")
    job = jobs.launch("gan", ["--steps", "1"], name="viaenv", gpus=1, module=trainer, image="smf:1")
    assert job.wait(timeout=30) == "succeeded"
    assert launched[0].gpus == 1 and launched[0].options == {"image": "smf:1"} and launched[0].kind == "gan"
    monkeypatch.delenv("SMF_JOB_BACKEND")
    assert isinstance(jobs.get_backend(), jobs.LocalBackend)
    assert jobs.launch("gan", ["--steps", "1"], name="d", module=trainer).wait(timeout=30) == "succeeded"


def test_launch_validation():
    with pytest.raises(errors.InvalidArgument, match="kind"):
        jobs.launch("som", [], name="x")
    with pytest.raises(errors.InvalidArgument, match="name"):
        jobs.launch("gan", [], name="../evil")
    assert jobs.launch.__kwdefaults__["module"] is None  # default: python -m smf.<kind>.train


def test_job_followed_as_external_operation(trainer, backend, tmp_path):
    progress = tmp_path / "progress.json"
    job = jobs.launch(
        "gan",
        ["--steps", "5", "--delay", "0.05", "--progress", str(progress)],
        name="op",
        module=trainer,
        backend=backend,
    )

    def read_progress():
        return json.loads(progress.read_text()) if progress.exists() else None

    registry = OperationRegistry()
    op = registry.start_external(
        "gan.train", lambda: jobs.poll_job(job, read_progress), interval=0.05, on_cancel=job.cancel
    )
    op = registry.wait(op.id, timeout=30)
    assert op.state == common_pb2.Operation.STATE_SUCCEEDED, op
    assert (op.progress.step, op.progress.total) == (5, 5)
    assert list(op.result_uris) == ["file:///store/gan/run"]

    failing = jobs.launch("gan", ["--exit", "2"], name="opfail", module=trainer, backend=backend)
    op = registry.wait(
        registry.start_external("gan.train", lambda: jobs.poll_job(failing), interval=0.05).id, timeout=30
    )
    assert op.state == common_pb2.Operation.STATE_FAILED and "last log lines" in op.error.message


def _wait_for_log(job, text, timeout=15):
    deadline = time.monotonic() + timeout
    while text not in job.logs():
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log:\n{job.logs()}"
        assert job.status() == "running", job.logs()
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True while pid runs; a zombie (killed, not yet reaped by whoever adopted it) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


if sys.platform != "linux":  # process groups and /proc
    pytestmark = pytest.mark.skip("local job tests need Linux")
