"""ArtifactService over a real loopback gRPC channel, on the file store and on a real S3 server."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from smf.artifact.server import MAX_CHUNK, ArtifactServicer
from smf.common.client import connect
from smf.common.v1 import artifact_pb2, artifact_pb2_grpc
from support.loopback import loopback_server

TOKEN = "artifact-token"


def serve(store):
    return loopback_server(
        "artifact",
        [(artifact_pb2_grpc.add_ArtifactServiceServicer_to_server, ArtifactServicer(store))],
        ["smf.common.v1.ArtifactService"],
        TOKEN,
    ).start()


@pytest.fixture
def client(request):
    """(stub, store) for the store fixture named by the test's `store_fixture` (default: file_store)."""
    store = request.getfixturevalue(getattr(request, "param", "file_store"))
    srv = serve(store)
    channel = connect(f"127.0.0.1:{srv.port}", token=TOKEN)
    yield artifact_pb2_grpc.ArtifactServiceStub(channel), store
    channel.close()
    srv.stop()


def status_of(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def upload_messages(key, data, sha256, *, chunk=256 << 10, **header):
    yield artifact_pb2.UploadArtifactRequest(header=artifact_pb2.UploadHeader(key=key, sha256=sha256, **header))
    for i in range(0, len(data), chunk):
        yield artifact_pb2.UploadArtifactRequest(data=data[i : i + chunk])


@pytest.mark.parametrize("client", ["file_store", "s3_store"], indirect=True)
def test_download_large_artifact_in_chunks(client):
    stub, store = client
    data = os.urandom((4 << 20) + 12345)  # above the 4 MiB a single message may carry
    digest = store.put_bytes("renders/r1/big.wav", data)
    call = stub.DownloadArtifact(artifact_pb2.DownloadArtifactRequest(key="renders/r1/big.wav"), timeout=60)
    messages = list(call)
    headers = dict(call.initial_metadata())
    assert headers["x-smf-sha256"] == digest and int(headers["x-smf-size"]) == len(data)
    assert len(messages) >= 9 and all(len(m.data) <= MAX_CHUNK < (1 << 20) for m in messages)
    assert [m.offset for m in messages[:-1]] == [i * MAX_CHUNK for i in range(len(messages) - 1)]
    received = b"".join(m.data for m in messages)
    assert received == data
    assert messages[-1].last and messages[-1].sha256 == digest == hashlib.sha256(received).hexdigest()


@pytest.mark.parametrize("client", ["file_store", "s3_store"], indirect=True)
def test_upload_checks_sha256_and_stores_nothing_on_mismatch(client):
    stub, store = client
    data = os.urandom(700_000)
    good = hashlib.sha256(data).hexdigest()
    code, details = status_of(lambda: stub.UploadArtifact(upload_messages("up/a.bin", data, "0" * 64), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("sha256:")
    assert not store.exists("up/a.bin") and store.list("up") == []

    reply = stub.UploadArtifact(upload_messages("up/a.bin", data, good, size=len(data)), timeout=30)
    assert (reply.info.key, reply.info.size, reply.info.sha256) == ("up/a.bin", len(data), good)
    assert reply.info.uri == store.key_uri("up/a.bin")
    assert store.get_bytes("up/a.bin") == data


def test_upload_validation(client):
    stub, store = client
    store.put_bytes("up/exists.bin", b"old")
    sha = hashlib.sha256(b"new").hexdigest()
    code, _ = status_of(lambda: stub.UploadArtifact(upload_messages("up/exists.bin", b"new", sha), timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    stub.UploadArtifact(upload_messages("up/exists.bin", b"new", sha, overwrite=True), timeout=10)
    assert store.get_bytes("up/exists.bin") == b"new"

    code, details = status_of(lambda: stub.UploadArtifact(upload_messages("../escape", b"x", sha), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("key:")
    code, details = status_of(
        lambda: stub.UploadArtifact(upload_messages("up/s.bin", b"new", sha, size=99), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("size:")
    assert not store.exists("up/s.bin")
    no_header = iter([artifact_pb2.UploadArtifactRequest(data=b"x")])
    code, details = status_of(lambda: stub.UploadArtifact(no_header, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("header:")
    code, details = status_of(lambda: stub.UploadArtifact(upload_messages("up/t.bin", b"", "not-hex"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("sha256:")


def test_not_found_and_traversal(client):
    stub, _ = client
    for rpc in (
        lambda k: stub.StatArtifact(artifact_pb2.StatArtifactRequest(key=k), timeout=10),
        lambda k: list(stub.DownloadArtifact(artifact_pb2.DownloadArtifactRequest(key=k), timeout=10)),
    ):
        code, details = status_of(lambda: rpc("samples/missing.wav"))  # noqa: B023 - called at once
        assert code == grpc.StatusCode.NOT_FOUND and "samples/missing.wav" in details
        for bad in ("../../etc/passwd", "/etc/passwd", "a/../../b"):
            code, details = status_of(lambda: rpc(bad))  # noqa: B023 - called at once
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("key:")
    code, _ = status_of(
        lambda: list(
            stub.DownloadArtifact(artifact_pb2.DownloadArtifactRequest(key="x", chunk_size=2 << 20), timeout=10)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_list_and_stat_with_paging(client):
    stub, store = client
    keys = [f"grids/g1/cells/{i:02d}.wav" for i in range(5)] + ["grids/g1/grid.json", "gan/r/config.json"]
    for k in keys:
        store.put_bytes(k, k.encode())
    pages, token = [], ""
    while True:
        reply = stub.ListArtifacts(
            artifact_pb2.ListArtifactsRequest(prefix="grids/", page_size=2, page_token=token), timeout=10
        )
        pages.append(list(reply.keys))
        token = reply.next_page_token
        if not token:
            break
    assert [k for p in pages for k in p] == sorted(k for k in keys if k.startswith("grids/"))
    assert all(len(p) <= 2 for p in pages) and len(pages) == 3
    info = stub.StatArtifact(artifact_pb2.StatArtifactRequest(key="gan/r/config.json"), timeout=10).info
    assert info.size == len(b"gan/r/config.json")
    assert info.sha256 == hashlib.sha256(b"gan/r/config.json").hexdigest() and info.modify_time.seconds > 0
