"""The artifact store, against both backends: a local folder and a real S3 server (SeaweedFS).

Tests taking the `store` fixture run twice (file, s3). The S3-only tests at the bottom cover what only a
server can do: credentials, an unreachable endpoint, retries across a restart, multipart uploads.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from smf.common.errors import (
    AlreadyExists,
    DataCorruption,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from smf.common.store import FileStore, S3Store, open_store, parse_uri, validate_key
from support.corrupt import corrupt_object
from support.flaky_proxy import FlakyProxy
from support.seaweed import free_ports


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- both backends -----------------------------------------------------------------------------------------------
def test_put_get_bytes_round_trip(store):
    data = os.urandom(3000)
    assert store.put_bytes("a/b/c.bin", data) == sha(data)
    assert store.get_bytes("a/b/c.bin") == data
    assert store.exists("a/b/c.bin")
    info = store.stat("a/b/c.bin")
    assert (info.key, info.size, info.sha256) == ("a/b/c.bin", 3000, sha(data))
    assert abs(info.modified - time.time()) < 120


def test_empty_object_and_overwrite(store):
    assert store.put_bytes("x", b"") == sha(b"")
    assert store.get_bytes("x") == b""
    store.put_bytes("x", b"second")
    assert store.get_bytes("x") == b"second"
    assert store.stat("x").sha256 == sha(b"second")


def test_put_file_get_file_and_chunks(store, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(2_500_000)
    src.write_bytes(data)
    assert store.put_file("ckpt/step-1.pt", src) == sha(data)
    dst = tmp_path / "out" / "copy.bin"
    assert store.get_file("ckpt/step-1.pt", dst) == sha(data)
    assert dst.read_bytes() == data
    chunks = list(store.iter_chunks("ckpt/step-1.pt", chunk_size=1 << 20))
    assert b"".join(chunks) == data and len(chunks) >= 3
    assert not [p for p in dst.parent.iterdir() if p.name != "copy.bin"]  # no temp files left behind


def test_list_is_recursive_sorted_and_prefix_is_a_folder(store):
    for key in ["b", "a/2/x", "a/1", "ab/3", "a/2/y.wav"]:
        store.put_bytes(key, key.encode())
    assert store.list() == ["a/1", "a/2/x", "a/2/y.wav", "ab/3", "b"]  # no sidecars, no temp files
    assert store.list("a") == ["a/1", "a/2/x", "a/2/y.wav"]  # not ab/3
    assert store.list("a/") == store.list("a")
    assert store.list("a/2") == ["a/2/x", "a/2/y.wav"]
    assert store.list("nothing/here") == []


def test_delete_and_delete_prefix(store):
    for key in ["run1/a", "run1/sub/b", "run10/c", "other"]:
        store.put_bytes(key, b"1")
    store.delete("other")
    assert not store.exists("other")
    store.delete_prefix("run1")
    assert store.list() == ["run10/c"]  # a prefix is a folder: run10 survives
    store.delete_prefix("run1")  # nothing left there: fine
    with pytest.raises(InvalidArgument) as e:
        store.delete_prefix("")
    assert e.value.field == "prefix"
    # The key can be reused after its prefix was deleted (the file backend pruned the empty folders).
    store.put_bytes("run1/sub/b", b"again")
    assert store.get_bytes("run1/sub/b") == b"again"


def test_missing_key_is_not_found(store, tmp_path):
    assert not store.exists("no/such")
    for call in (
        lambda: store.get_bytes("no/such"),
        lambda: store.stat("no/such"),
        lambda: store.delete("no/such"),
        lambda: store.presigned_url("no/such"),
        lambda: list(store.iter_chunks("no/such")),
        lambda: store.get_file("no/such", tmp_path / "f"),
    ):
        with pytest.raises(NotFound, match="no/such"):
            call()
    assert not (tmp_path / "f").exists()


BAD_KEYS = [
    "../escape",
    "a/../../b",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a/",
    "",
    ".",
    "..",
    "a b",
    "a\\b",
    "ü",
    "x?y",
    "a:b",
    "%2e%2e/x",
    ".smf-meta/a.json",
    "a/.smf-tmp-1",
    "a\nb",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_rejected_before_any_io(store, key, tmp_path):
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.stat(key),
        lambda: store.iter_chunks(key),
        lambda: store.presigned_url(key),
        lambda: store.key_uri(key),
    ):
        with pytest.raises(InvalidArgument) as e:
            call()
        assert e.value.field == "key"
    assert store.list() == []


def test_validate_key_accepts_the_architecture_layout():
    for key in [
        "datasets/tones/a_1.wav",
        "gan/run-1/ckpt/step-100.pt",
        "grids/2026/cells/x_d1.0_d0.3_v.0.params",
        ".hidden",
        "a..b",
    ]:
        assert validate_key(key) == key


def test_presigned_url_downloads_without_credentials(store):
    data = os.urandom(5000)
    store.put_bytes("renders/r1/0.wav", data)
    url = store.presigned_url("renders/r1/0.wav", expires_s=60)
    assert url.startswith("file://" if isinstance(store, FileStore) else "http://")
    with urllib.request.urlopen(url, timeout=10) as r:  # urllib speaks file:// and http://
        assert r.read() == data


@pytest.mark.parametrize("read", ["get_bytes", "get_file", "iter_chunks"])
def test_corrupted_object_detected_on_read(store, read, tmp_path):
    data = os.urandom(100_000)
    store.put_bytes("gan/run1/ckpt/step-1.pt", data)
    corrupt_object(store, "gan/run1/ckpt/step-1.pt")
    dst = tmp_path / "dst.pt"
    with pytest.raises(DataCorruption, match="gan/run1/ckpt/step-1.pt"):
        if read == "get_bytes":
            store.get_bytes("gan/run1/ckpt/step-1.pt")
        elif read == "get_file":
            store.get_file("gan/run1/ckpt/step-1.pt", dst)
        else:
            for _ in store.iter_chunks("gan/run1/ckpt/step-1.pt", chunk_size=4096):
                pass
    assert not dst.exists()  # get_file publishes nothing unverified


def test_concurrent_overwrite_never_shows_a_torn_object(store):
    a, b = os.urandom(300_000), os.urandom(300_000)
    store.put_bytes("k", a)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            try:
                store.put_bytes("k", b if i % 2 else a)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(25):
            assert store.get_bytes("k") in (a, b)
    finally:
        stop.set()
        t.join()
    assert not errors


def test_key_uri_and_parse_uri_round_trip(store):
    store.put_bytes("grids/g1/grid.json", b"{}")
    uri = store.key_uri("grids/g1/grid.json")
    root, key = parse_uri(uri)
    assert open_store(root).get_bytes(key) == b"{}"
    assert open_store(root).key_uri(key) == uri


def test_open_store_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SMF_STORE", str(tmp_path / "plain-path"))
    assert open_store().uri == f"file://{tmp_path}/plain-path"
    monkeypatch.delenv("SMF_STORE")
    monkeypatch.setenv("HOME", str(tmp_path))
    s = open_store()
    assert isinstance(s, FileStore) and s.root == tmp_path / ".smf" / "store"
    with pytest.raises(InvalidArgument, match="unsupported scheme"):
        open_store("ftp://x/y")
    with pytest.raises(InvalidArgument, match="absolute"):
        open_store("file://relative/dir")


def test_file_store_keeps_plain_files_and_hidden_sidecars(file_store):
    file_store.put_bytes("datasets/tones/a.wav", b"RIFF")
    assert (file_store.root / "datasets/tones/a.wav").read_bytes() == b"RIFF"
    assert (file_store.root / ".smf-meta/datasets/tones/.smf-a.wav.json").is_file()
    file_store.delete("datasets/tones/a.wav")
    assert sorted(p.name for p in file_store.root.iterdir()) == [".smf-meta"]  # empty folders pruned


def test_file_store_reads_sidecars_of_the_old_layout(file_store):
    file_store.put_bytes("a/b.wav", b"RIFF")
    new = file_store.root / ".smf-meta/a/.smf-b.wav.json"
    new.rename(file_store.root / ".smf-meta/a/b.wav.json")  # where stores before the rename kept it
    assert file_store.get_bytes("a/b.wav") == b"RIFF"
    file_store.put_bytes("a/b.wav", b"RIFF2")
    assert not (file_store.root / ".smf-meta/a/b.wav.json").exists() and file_store.get_bytes("a/b.wav") == b"RIFF2"


@pytest.mark.parametrize("first, second", [("K", "K/x"), ("K/x", "K"), ("d/K", "d/K/x/y"), ("d/K/x/y", "d/K")], ids=str)
def test_a_key_is_an_object_or_a_folder_never_both_on_either_backend(store, first, second):
    """Finding 7b of issue 13: S3 would hold both, a folder can't; both backends refuse it alike, naming the key,
    and the refused write leaves nothing behind (it was INTERNAL and an empty folder on the file backend)."""
    store.put_bytes(first, b"1")
    before = _tree(store)
    with pytest.raises(FailedPrecondition, match=f"key {second!r}.*never both"):
        store.put_bytes(second, b"2")
    with pytest.raises(FailedPrecondition, match="never both"):
        store.put_file(second, __file__)
    assert store.list() == [first] and _tree(store) == before


@pytest.mark.parametrize("first, second", [("K", "K.json/x"), ("K.json/x", "K")])
def test_sidecar_names_never_collide_with_keys(store, first, second):
    """Finding 7b: `K` then `K.json/x` (or the reverse) fought over the file store's sidecar path -> INTERNAL."""
    store.put_bytes(first, b"1")
    store.put_bytes(second, b"2")
    assert store.list() == sorted([first, second])
    assert store.get_bytes(first) == b"1" and store.get_bytes(second) == b"2"


def _tree(store) -> list[str]:
    """Every path under a file store's root (folders included); the listing for S3."""
    if isinstance(store, FileStore):
        return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if ".smf-lock" not in p.name)
    return store.list()


def test_exclusive_create_lets_one_writer_win(store):
    assert store.put_bytes("m/manifest.json", b"first", if_absent=True)
    with pytest.raises(AlreadyExists, match="m/manifest.json"):
        store.put_bytes("m/manifest.json", b"second", if_absent=True)
    assert store.get_bytes("m/manifest.json") == b"first"
    store.put_bytes("m/manifest.json", b"first", if_absent=True)  # the same bytes: a retry of our own create


def test_move_keeps_bytes_and_recorded_sha(store):
    store.put_bytes(".staging/op/a.wav", b"RIFF")
    store.move(".staging/op/a.wav", "samples/s1/a.wav")
    assert store.get_bytes("samples/s1/a.wav") == b"RIFF" and store.stat("samples/s1/a.wav").sha256 == sha(b"RIFF")
    assert not store.exists(".staging/op/a.wav")
    store.put_bytes(".staging/op2/x", b"x")
    assert store.list() == ["samples/s1/a.wav"] and store.list(".staging") == [".staging/op2/x"]


# --- 100 MB through both backends --------------------------------------------------------------------------------
def test_100mb_round_trip(store, tmp_path):
    src, dst = tmp_path / "big.bin", tmp_path / "back.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(100):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    t0 = time.perf_counter()
    assert store.put_file("big/object.bin", src) == h.hexdigest()
    t1 = time.perf_counter()
    assert store.get_file("big/object.bin", dst) == h.hexdigest()
    t2 = time.perf_counter()
    assert store.stat("big/object.bin").size == 100 << 20
    print(f"\n{type(store).__name__}: 100 MiB put {t1 - t0:.2f} s, get+verify {t2 - t1:.2f} s")
    if isinstance(store, S3Store):  # went up as a multipart upload (ETag "<md5>-<parts>")
        etag = store.client.stat_object(store.bucket, f"{store.prefix}/big/object.bin").etag
        assert "-" in etag, etag


# --- S3 only: credentials, reachability, retries -------------------------------------------------------------------
def test_s3_bucket_is_created_on_first_write_never_on_a_read(s3_server, s3_env, monkeypatch):
    """Finding 2 of issue 13: a read of s3://other-bucket created that bucket with the server's credentials."""
    bucket = f"smf-auto-{os.urandom(4).hex()}"
    store = open_store(f"s3://{bucket}/p")
    with pytest.raises(NotFound, match="does not exist"):
        store.get_bytes("k")
    with pytest.raises(NotFound):
        store.stat("k")
    assert not store.exists("k") and store.list() == [] and not s3_server.client().bucket_exists(bucket)
    monkeypatch.setenv("SMF_S3_CREATE_BUCKET", "0")
    with pytest.raises(FailedPrecondition, match="SMF_S3_CREATE_BUCKET=0"):
        open_store(f"s3://{bucket}/p").put_bytes("k", b"v")
    assert not s3_server.client().bucket_exists(bucket)
    monkeypatch.delenv("SMF_S3_CREATE_BUCKET")
    store.put_bytes("k", b"v")
    assert s3_server.client().bucket_exists(bucket)
    assert open_store(f"s3://{bucket}").get_bytes("p/k") == b"v"  # prefix is just part of the object name


def test_s3_wrong_access_key_is_permission_denied(s3_server, s3_env, monkeypatch):
    monkeypatch.setenv("SMF_S3_ACCESS_KEY", "nobody-knows-me")
    with pytest.raises(PermissionDenied) as e:
        open_store("s3://smf-test/x").get_bytes("k")
    msg = e.value.message
    assert s3_server.endpoint in msg and "nobody-knows-me" in msg and "unknown access key" in msg
    assert s3_server.secret_key not in msg


def test_s3_wrong_secret_is_permission_denied_without_leaking_it(s3_server, s3_env, monkeypatch):
    monkeypatch.setenv("SMF_S3_SECRET_KEY", "not-the-secret-0123456789")
    with pytest.raises(PermissionDenied) as e:
        open_store("s3://smf-test/x").put_bytes("k", b"v")
    msg = e.value.message
    assert s3_server.endpoint in msg and s3_server.access_key in msg and "secret key does not match" in msg
    assert "not-the-secret" not in msg and s3_server.secret_key not in msg


def test_s3_unreachable_endpoint_is_unavailable_after_bounded_retries(monkeypatch):
    port = free_ports(1)[0]
    monkeypatch.setenv("SMF_S3_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("SMF_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("SMF_S3_SECRET_KEY", "s")
    monkeypatch.setenv("SMF_S3_RETRY_S", "1.5")
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
        open_store("s3://smf-test").get_bytes("k")
    assert time.monotonic() - t0 < 6


def test_s3_missing_endpoint_setting(monkeypatch):
    monkeypatch.delenv("SMF_S3_ENDPOINT", raising=False)
    with pytest.raises(InvalidArgument) as e:
        open_store("s3://smf-test/x")
    assert e.value.field == "SMF_S3_ENDPOINT"


def test_s3_object_without_recorded_sha_is_refused(s3_store):
    s3_store.client.put_object(s3_store.bucket, f"{s3_store.prefix}/foreign", io.BytesIO(b"abc"), 3)
    with pytest.raises(DataCorruption, match="no sha256 recorded"):
        s3_store.get_bytes("foreign")


def test_s3_operations_ride_out_a_server_restart(fresh_s3_server, monkeypatch):
    for name, value in fresh_s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = open_store("s3://smf-test/restart")
    store.put_bytes("before", b"1")
    fresh_s3_server.stop()
    restart = threading.Timer(1.0, fresh_s3_server.start)  # back on the same port ~4 s later
    restart.start()
    t0 = time.monotonic()
    try:
        assert store.get_bytes("before") == b"1"  # retried with backoff until the server answered
        store.put_bytes("after", b"2")
        assert store.list() == ["after", "before"]
        assert time.monotonic() - t0 > 1.0
    finally:
        restart.join()


def test_s3_content_type_guessed_from_key(s3_store):
    s3_store.put_bytes("renders/r/0.wav", b"RIFF....")
    with urllib.request.urlopen(s3_store.presigned_url("renders/r/0.wav"), timeout=10) as r:
        assert r.headers["Content-Type"] in ("audio/x-wav", "audio/wav")


def test_s3_presigned_url_expiry_is_bounded(s3_store):
    s3_store.put_bytes("k", b"v")
    with pytest.raises(InvalidArgument) as e:
        s3_store.presigned_url("k", expires_s=8 * 24 * 3600)
    assert e.value.field == "expires_s"


def test_paths_are_pathlike_or_str(store, tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("hi")
    store.put_file("s", str(p))
    store.get_file("s", str(tmp_path / "g.txt"))
    assert Path(tmp_path / "g.txt").read_text() == "hi"


@pytest.mark.parametrize("mode", ["slowdown", "500", "reset"])
def test_s3_transient_errors_are_retried(s3_server, monkeypatch, mode):
    host, port = s3_server.endpoint.split(":")
    with FlakyProxy((host, int(port)), fail=3, mode=mode) as proxy:
        for name, value in {**s3_server.env(), "SMF_S3_ENDPOINT": proxy.endpoint}.items():
            monkeypatch.setenv(name, value)
        store = open_store(f"s3://{s3_server.bucket}/flaky-{mode}")
        store.put_bytes("k", b"v")  # the bucket check meets the 3 failures, then everything goes through
        assert store.get_bytes("k") == b"v"
        assert proxy.failed == 3


def test_s3_persistent_slowdown_becomes_unavailable(s3_server, monkeypatch):
    host, port = s3_server.endpoint.split(":")
    with FlakyProxy((host, int(port)), fail=10_000, mode="slowdown") as proxy:
        for name, value in {**s3_server.env(), "SMF_S3_ENDPOINT": proxy.endpoint, "SMF_S3_RETRY_S": "1"}.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(Unavailable, match=f"{proxy.endpoint}.*gave up after"):
            open_store(f"s3://{s3_server.bucket}/x").get_bytes("k")
        assert proxy.failed >= 3


def test_s3_download_cut_midway_resumes_and_verifies(s3_server, s3_store, monkeypatch, tmp_path):
    data = os.urandom(3 << 20)
    s3_store.put_bytes("big", data)
    host, port = s3_server.endpoint.split(":")
    with FlakyProxy((host, int(port)), cut_after=(2 << 20) + 5000) as proxy:
        monkeypatch.setenv("SMF_S3_ENDPOINT", proxy.endpoint)
        via_proxy = open_store(s3_store.uri)
        assert via_proxy.get_file("big", tmp_path / "big") == sha(data)  # resumed at the byte it reached
        assert proxy.cuts == 1
    assert (tmp_path / "big").read_bytes() == data


@pytest.mark.parametrize("key", ["a" * 5000, "x/" + "b" * 201, "/".join(["c"] * 600)])
def test_overlong_keys_are_rejected(store, key):
    with pytest.raises(InvalidArgument, match="limit"):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidArgument, match="limit"):
        store.exists(key)


def test_s3_tree_rule_holds_across_processes_that_remember_what_they_wrote(s3_store):
    """check_tree remembers the folders and objects a store wrote (one PUT per progress.json, not 3 HEADs and a
    LIST); another process (here: another store object) still sees the real tree."""
    other = open_store(s3_store.uri)
    s3_store.put_bytes("run/ckpt/step-1.pt", b"1")
    s3_store.put_bytes("run/progress.json", b"{}")
    with pytest.raises(FailedPrecondition, match="never both"):
        other.put_bytes("run/ckpt", b"x")
    other.put_bytes("run/ckpt/step-2.pt", b"2")
    with pytest.raises(FailedPrecondition, match="never both"):
        s3_store.put_bytes("run/progress.json/x", b"x")
    s3_store.put_bytes("run/progress.json", b"{1}")  # remembered: no HEADs, still one object
    assert s3_store.list("run") == ["run/ckpt/step-1.pt", "run/ckpt/step-2.pt", "run/progress.json"]
