"""The four services a pipeline talks to: spawned locally on loopback, or remote targets given by the user.

    with local_services(store.uri) as svc:           # `smf serve gan|grid|som|rnn` subprocesses, free ports,
        svc.targets["gan"], svc.token                # a fresh token; torn down (SIGTERM, then SIGKILL) on exit
    svc = remote_services(parse_remote("gan=h:50051,grid=h:50052,som=h:50053,rnn=h:50054"))

Local services are real servers (auth, health, the lot), so the pipeline exercises exactly what a cluster runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smf.common.errors import InvalidArgument, Unavailable

__all__ = ["SERVICES", "Services", "local_services", "parse_remote", "remote_services", "wait_healthy"]

SERVICES = ("gan", "grid", "som", "rnn")
START_TIMEOUT_S = 120.0  # first start imports torch on a busy 2-core box: tens of seconds


@dataclass
class Services:
    targets: dict[str, str]
    token: str | None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def log_tail(self, name: str, n: int = 30) -> str:
        path = self.logs.get(name)
        if not path or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def parse_remote(spec: str) -> dict[str, str]:
    """ "gan=host:port,grid=host:port,..." -> {"gan": "host:port", ...}; every service must be named."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, target = part.partition("=")
        if not sep or name not in SERVICES or ":" not in target:
            raise InvalidArgument("--remote", f"{part!r}: expected SVC=HOST:PORT with SVC in {', '.join(SERVICES)}")
        out[name] = target
    missing = [s for s in SERVICES if s not in out]
    if missing:
        raise InvalidArgument("--remote", f"no target for {', '.join(missing)} (give all of {', '.join(SERVICES)})")
    return out


def remote_services(targets: dict[str, str], *, token: str | None = None) -> Services:
    svc = Services(targets=dict(targets), token=token or os.environ.get("SMF_TOKEN"))
    wait_healthy(svc, timeout=30.0)
    return svc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(svc: Services, *, timeout: float = START_TIMEOUT_S) -> None:
    """Poll grpc.health.v1 (no auth needed) of every service until SERVING; a dead child fails at once."""
    deadline = time.monotonic() + timeout
    for name, target in svc.targets.items():
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                proc = svc.processes.get(name)
                if proc is not None and proc.poll() is not None:
                    raise Unavailable(
                        f"service {name} exited with status {proc.returncode} while starting:\n{svc.log_tail(name)}"
                    )
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"service {name} at {target} not healthy after {timeout:.0f} s\n{svc.log_tail(name)}"
                    )
                time.sleep(0.3)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the pipeline process dies (even by SIGKILL), so no service outlives it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux only)
    except (OSError, AttributeError):
        pass


def _spawn(name: str, args: list[str], env: dict, log_dir: Path) -> tuple[subprocess.Popen, Path]:
    log = log_dir / f"{name}.log"
    with open(log, "ab") as f:
        # own process group: tear-down signals the service and the workers it started, nothing else.
        # preexec_fn only makes one prctl call (no locks), which is safe even with threads around.
        proc = subprocess.Popen(
            [sys.executable, "-m", "smf.cli", "serve", name, *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # noqa: PLW1509
    return proc, log


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc): the training jobs a service launched in their own sessions."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@contextlib.contextmanager
def local_services(
    store_uri: str,
    *,
    log_dir: str | os.PathLike | None = None,
    env: dict | None = None,
    names: tuple[str, ...] = SERVICES,
    extra_args: dict[str, list[str]] | None = None,
):
    """Start gan, grid, som and rnn (or `names`) as `smf serve` subprocesses on free loopback ports; yields Services.

    Every service uses `store_uri`; the S3 settings and anything else come from the environment (plus `env`).
    `extra_args` adds flags per service (e.g. {"gan": ["--max-queue", "16"]}).
    """
    token = secrets.token_urlsafe(24)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="smf-pipeline-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {
        **os.environ,
        **(env or {}),
        "SMF_TOKEN": token,
        "SMF_STORE": store_uri,
        "SMF_JOB_DIR": str(log_dir / "jobs"),
        "PYTHONUNBUFFERED": "1",
    }
    ports = {name: _free_port() for name in SERVICES}
    targets = {name: f"127.0.0.1:{p}" for name, p in ports.items()}
    common = ["--host", "127.0.0.1", "--metrics-port", "-1", "--store", store_uri]
    args = {
        "gan": ["--port", str(ports["gan"])],
        "grid": ["--port", str(ports["grid"]), "--gan", targets["gan"], "--http-port", str(_free_port())],
        "som": ["--port", str(ports["som"]), "--gan", targets["gan"]],
        "rnn": ["--port", str(ports["rnn"])],
    }
    svc = Services(targets={n: targets[n] for n in names}, token=token)
    try:
        for name in names:
            proc, log = _spawn(name, args[name] + common + list((extra_args or {}).get(name, [])), child_env, log_dir)
            svc.processes[name], svc.logs[name] = proc, log
        wait_healthy(svc)
        yield svc
    finally:
        stop_local(svc)


def stop_local(svc: Services, grace: float = 10.0) -> None:
    """SIGTERM each service's process group and the training jobs it started (they run in their own sessions and
    would outlive their service: trainers checkpoint on SIGTERM and exit); SIGKILL what is left after `grace`."""
    groups = []
    for proc in svc.processes.values():
        if proc.poll() is None:
            groups += [proc.pid, *_children(proc.pid)]
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in svc.processes.values():
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
    for pgid in groups:
        while time.monotonic() < deadline and Path(f"/proc/{pgid}").exists() and not _zombie(pgid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for proc in svc.processes.values():
        proc.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
