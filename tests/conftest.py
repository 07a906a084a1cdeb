"""Shared pytest fixtures for every smf test.

Stores (the artifact store, `smf.common.store`):
    store          a fresh, empty store; the test runs twice: once on `file://`, once on a real S3 server
    file_store     a fresh `file://` store in the test's tmp_path
    s3_store       a fresh `s3://smf-test/<unique prefix>` store on the session's SeaweedFS server
    s3_env         sets SMF_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY for that server (so `open_store("s3://…")`,
                   the CLI and subprocesses reach it); returns the dict
S3 server:
    s3_server      session-scoped SeaweedFS (`tests/support/seaweed.py`): .endpoint ("127.0.0.1:P"), .access_key,
                   .secret_key, .bucket, .env(), .client() (plain minio client). Shared: don't stop or restart it.
    fresh_s3_server  a private SeaweedFS for one test (~4 s to start) — for tests that restart or kill the server:
                   .restart() keeps ports and data, .stop() is SIGKILL.
Every test also gets SMF_STORE pointed at its own tmp folder, so code that calls `open_store()` never touches
~/.smf/store.
"""

from __future__ import annotations

import os
import re
import secrets
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # makes `support` importable whatever the rootdir/import mode

from support.seaweed import SeaweedServer
from support.torch_threads import one_torch_thread


@pytest.fixture(autouse=True)
def _default_store_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SMF_STORE", f"file://{tmp_path}/default-store")
    monkeypatch.setenv("SMF_SPEC_CACHE", str(tmp_path / "spec-cache"))  # the GAN's spectrogram cache (smf.gan.data)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_s3_server(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-private"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def unique_prefix(request) -> str:
    """A key prefix unique to this test (readable in the bucket: the test's name plus a random tail)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")[:60] or "test"
    return f"{name}-{secrets.token_hex(4)}"


@pytest.fixture
def one_thread():
    """torch on one thread for the test (restored after); a module opts in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with one_torch_thread():
        yield


@pytest.fixture
def file_store(tmp_path):
    from smf.common.store import open_store

    return open_store(f"file://{tmp_path}/store")


@pytest.fixture
def s3_store(s3_server, s3_env, request):
    from smf.common.store import open_store

    return open_store(f"s3://{s3_server.bucket}/{unique_prefix(request)}")


@pytest.fixture(params=["file", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (longer variants: real training to convergence, 60 s load runs) run only with SMF_SLOW=1."""
    if os.environ.get("SMF_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow variant: set SMF_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
