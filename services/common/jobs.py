"""Run a training job (`python -m smf.<kind>.train ...`) on a pluggable backend; the local subprocess one lives here.

    job = launch("gan", ["--config", "cfg.json", "--out", store.uri], name="mygan")
    job.status()          # "pending" | "running" | "succeeded" | "failed"
    job.cancel()          # SIGTERM (the trainer checkpoints and exits), SIGKILL after the grace period
    job.wait(); print(job.logs())

Locally, `gpus > 1` or the option `nproc=N` runs the trainer under torchrun, N processes (see `local_command`).
The backend comes from $SMF_JOB_BACKEND ("local" by default). Another module adds one with
`register_backend("kubernetes", KubernetesBackend)`; services only ever see `JobHandle`. Trainers report progress by
writing progress.json to the store, so a service follows both backends the same way (see `poll_job`).
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smf.common.errors import FailedPrecondition, InvalidArgument, NotFound
from smf.common.operations import ExternalStatus

_KIND = re.compile(r"[a-z][a-z0-9_]{0,30}")
STATES = ("pending", "running", "succeeded", "failed")
DEFAULT_GRACE_S = 30.0  # time a trainer gets after SIGTERM to write its checkpoint
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass
class JobSpec:
    """What to run, independent of where. Backends may read the optional resource fields (local ignores them)."""

    name: str
    kind: str
    module: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    options: dict = field(default_factory=dict)  # backend-specific (image, node selector, deadline, ...)


class JobHandle(abc.ABC):
    """A launched job. Every method is safe to call from any thread, repeatedly."""

    id: str
    spec: JobSpec
    # True when the job is a child of this process and would be orphaned if it exited (so a server stopping
    # gracefully stops it: see OperationRegistry.cancel_all); False when it lives on its own, like a Kubernetes Job
    # that outlives a service restart and is re-attached to through the store's progress.json.
    owned_by_process: bool = False

    @abc.abstractmethod
    def status(self) -> str:
        """One of STATES."""

    @abc.abstractmethod
    def cancel(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Ask the job to stop (SIGTERM), force it after `grace` seconds. Returns at once."""

    @abc.abstractmethod
    def logs(self, tail: int | None = None) -> str:
        """Captured stdout+stderr (the last `tail` lines if given)."""

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> str:
        """Block until the job ended (or timeout); returns status()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (state := self.status()) in ("pending", "running"):
            if deadline is not None and time.monotonic() >= deadline:
                return state
            time.sleep(poll)
        return state

    @property
    def done(self) -> bool:
        return self.status() in ("succeeded", "failed")


class JobBackend(abc.ABC):
    """Where jobs run. `launch` starts one; `get` finds one again by id (NotFound if unknown)."""

    name: str

    @abc.abstractmethod
    def launch(self, spec: JobSpec) -> JobHandle: ...

    @abc.abstractmethod
    def get(self, job_id: str) -> JobHandle: ...


# ---- local subprocess backend -------------------------------------------------------------------------------


class LocalJob(JobHandle):
    """A job running as a child process in its own process group (so cancel reaches its workers too)."""

    owned_by_process = True

    def __init__(self, job_id: str, spec: JobSpec, proc: subprocess.Popen, log_path: Path):
        self.id, self.spec, self.proc, self.log_path = job_id, spec, proc, log_path
        self.cancel_requested = False
        self._lock = threading.Lock()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "running"
        # a cancelled trainer may exit 0 after checkpointing, but it did not finish its work
        return "succeeded" if code == 0 and not self.cancel_requested else "failed"

    def cancel(self, grace: float = DEFAULT_GRACE_S) -> None:
        with self._lock:
            if self.cancel_requested or self.proc.poll() is not None:
                return
            self.cancel_requested = True
        self._signal(signal.SIGTERM)
        threading.Thread(target=self._kill_after, args=(grace,), daemon=True, name=f"kill-{self.id}").start()

    def _kill_after(self, grace: float) -> None:
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # pid == pgid: started with start_new_session
        except ProcessLookupError:
            pass  # already gone

    def logs(self, tail: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "".join(text.splitlines(keepends=True)[-tail:]) if tail else text

    def __repr__(self) -> str:
        return f"LocalJob({self.id!r}, pid={self.proc.pid}, {self.status()})"


class LocalBackend(JobBackend):
    """Runs jobs as subprocesses of this process; logs go to `<job_dir>/<id>/log.txt` (default $SMF_JOB_DIR or
    ~/.smf/jobs). Jobs live as long as this process keeps their handles: `get` only knows jobs it launched."""

    name = "local"

    def __init__(self, job_dir: str | os.PathLike | None = None):
        self._job_dir = job_dir
        self._jobs: dict[str, LocalJob] = {}
        self._lock = threading.Lock()

    @property
    def job_dir(self) -> Path:
        """Resolved per launch, so a changed $SMF_JOB_DIR applies to the shared default backend too."""
        return Path(self._job_dir or os.environ.get("SMF_JOB_DIR") or Path.home() / ".smf" / "jobs")

    def launch(self, spec: JobSpec) -> LocalJob:
        command = local_command(spec)  # validates nproc before anything is created
        job_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = self.job_dir / job_id
        folder.mkdir(parents=True, exist_ok=False)
        (folder / "spec.json").write_text(json.dumps({"id": job_id, **spec.__dict__}, indent=2, default=str))
        log_path = folder / "log.txt"
        env = {**os.environ, **spec.env, "SMF_JOB_ID": job_id, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        job = LocalJob(job_id, spec, proc, log_path)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> LocalJob:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"job {job_id!r} is not known to this process (local jobs end with their server)")
            return self._jobs[job_id]


def local_command(spec: JobSpec) -> list[str]:
    """The local job's command line: `python -m <module> <args>`, or torchrun with one process per GPU when
    spec.gpus > 1 or the `nproc` option is given (e.g. nproc=2 for two CPU processes on gloo). torchrun runs as
    `python -m torch.distributed.run` so it is this interpreter's torch; its workers and itself share the job's
    process group, so cancel's SIGTERM reaches every rank (they agree on a step, rank 0 checkpoints). Other options
    belong to other backends (image, nodes, ...) and are ignored here."""
    nproc = spec.options.get("nproc", max(spec.gpus, 1))
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise InvalidArgument("nproc", f"must be an integer >= 1, got {nproc!r}")
    if nproc == 1:
        return [sys.executable, "-m", spec.module, *spec.args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        spec.module,
        *spec.args,
    ]


# ---- backend registry ---------------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[[], JobBackend]] = {"local": LocalBackend}
# Backends living in their own module register themselves on import; importing on first use means
# SMF_JOB_BACKEND=kubernetes works without the service importing the module itself.
_BACKEND_MODULES = {"kubernetes": "smf.common.k8s_jobs"}
_INSTANCES: dict[str, JobBackend] = {}
_REGISTRY_LOCK = threading.Lock()


def register_backend(name: str, factory: Callable[[], JobBackend]) -> None:
    """Make a backend selectable by $SMF_JOB_BACKEND=name (e.g. from a kubernetes backend module)."""
    with _REGISTRY_LOCK:
        _FACTORIES[name] = factory
        _INSTANCES.pop(name, None)


def get_backend(name: str | None = None) -> JobBackend:
    """The backend `name` (default $SMF_JOB_BACKEND or "local"); one instance per name per process."""
    name = name or os.environ.get("SMF_JOB_BACKEND") or "local"
    if name not in _FACTORIES and name in _BACKEND_MODULES:
        importlib.import_module(_BACKEND_MODULES[name])  # calls register_backend
    with _REGISTRY_LOCK:
        if name not in _INSTANCES:
            if name not in _FACTORIES:
                raise FailedPrecondition(
                    f"SMF_JOB_BACKEND={name!r} is not a known job backend (known: {', '.join(sorted(_FACTORIES))})"
                )
            _INSTANCES[name] = _FACTORIES[name]()
        return _INSTANCES[name]


def launch(
    kind: str,
    args: list[str],
    *,
    name: str,
    env: dict[str, str] | None = None,
    gpus: int = 0,
    module: str | None = None,
    backend: str | JobBackend | None = None,
    **options,
) -> JobHandle:
    """Start `python -m smf.<kind>.train <args>` as a job. `module` overrides the module (tests, tools)."""
    if not _has_trainer(kind):
        raise InvalidArgument("kind", f"{kind!r} is not a service with a trainer (a module smf.<kind>.train)")
    if not _NAME.fullmatch(name or ""):
        raise InvalidArgument(
            "name", f"{name!r} must be 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit"
        )
    if gpus < 0:
        raise InvalidArgument("gpus", f"must be >= 0, got {gpus}")
    spec = JobSpec(
        name=name,
        kind=kind,
        module=module or f"smf.{kind}.train",
        args=[str(a) for a in args],
        env=dict(env or {}),
        gpus=gpus,
        options=options,
    )
    chosen = backend if isinstance(backend, JobBackend) else get_backend(backend)
    return chosen.launch(spec)


def _has_trainer(kind: str) -> bool:
    """Whether `smf.<kind>.train` exists: asking the package, not a list, keeps service names out of common/."""
    if not _KIND.fullmatch(kind or ""):
        return False
    try:
        return importlib.util.find_spec(f"smf.{kind}.train") is not None
    except ModuleNotFoundError:  # no package smf.<kind> at all
        return False


def poll_job(job: JobHandle, read_progress: Callable[[], dict | None] | None = None) -> ExternalStatus:
    """One look at a job for `OperationRegistry.start_external`: its state plus the trainer's progress.json.

        registry.start_external("gan.train", lambda: poll_job(job, lambda: read_json(store, "gan/run/progress.json")),
                                on_cancel=job.cancel)
    `read_progress` returns the parsed progress.json or None when there is none yet.
    """
    state = job.status()
    progress = (read_progress() if read_progress else None) or {}
    status = ExternalStatus.from_progress(progress, state=state)
    if state == "failed" and not status.error:
        status.error = f"job {job.id} failed; last log lines:\n{job.logs(tail=20)}"
    return status
