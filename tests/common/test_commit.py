"""The commit protocol (smf.common.commit), on both backends: staged files are invisible until the manifest is
committed; an abort leaves nothing; ids are claimed; the sweeper removes stale staging."""

from __future__ import annotations

import threading
import time

import pytest
from smf.common.commit import CLAIMS, Staging, sweep
from smf.common.errors import AlreadyExists, DataCorruption, FailedPrecondition, NotFound
from smf.common.lineage import list_artifacts, read_manifest, verify_artifact, write_artifact


def test_staged_files_are_invisible_until_commit_then_exactly_listed(store):
    with Staging(store, "samples/s1") as out:
        out.put_bytes("0.wav", b"RIFF0")
        out.put_bytes("0.pt", b"z0")
        assert store.list() == [] and list_artifacts(store, "samples") == []
        with pytest.raises(NotFound):
            read_manifest(store, "samples/s1")
        manifest = out.commit("samples", config={"n": 1}, inputs=["gan/run1"], service="gan")
    assert sorted(manifest.files) == ["0.pt", "0.wav"]
    assert store.list() == ["samples/s1/0.pt", "samples/s1/0.wav", "samples/s1/manifest.json"]
    assert store.list(".staging") == []  # staging and the claim are gone
    verify_artifact(store, "samples/s1")


def test_an_exception_leaves_nothing_behind_and_releases_the_id(store):
    with pytest.raises(RuntimeError), Staging(store, "samples/s2") as out:
        out.put_bytes("0.wav", b"RIFF")
        raise RuntimeError("cancelled")
    assert store.list() == [] and store.list(".staging") == []
    write_artifact(store, "samples", "samples/s2", {"0.wav": b"again"})  # the id is free again
    assert read_manifest(store, "samples/s2").files.keys() == {"0.wav"}


def test_stale_files_under_the_id_are_never_taken_in(store):
    """Finding 5 of issue 13: a later render with the same id committed a manifest taking in 21 stale files."""
    store.put_bytes("renders/r1/7.wav", b"stale")  # left by a writer that never committed
    manifest = write_artifact(store, "renders", "renders/r1", {"0.wav": b"new"})
    assert list(manifest.files) == ["0.wav"]


def test_committed_id_is_already_exists_unless_overwrite(store):
    write_artifact(store, "renders", "renders/r2", {"0.wav": b"a", "1.wav": b"b"})
    with pytest.raises(AlreadyExists, match="renders/r2"):
        write_artifact(store, "renders", "renders/r2", {"0.wav": b"c"})
    assert read_manifest(store, "renders/r2").files.keys() == {"0.wav", "1.wav"}
    write_artifact(store, "renders", "renders/r2", {"0.wav": b"c"}, overwrite=True)
    assert store.list("renders/r2") == ["renders/r2/0.wav", "renders/r2/manifest.json"]  # 1.wav went with it
    assert store.get_bytes("renders/r2/0.wav") == b"c"


def test_overwrite_keeps_what_else_lives_in_the_folder(store):
    """pipelines/<name> is an artifact whose folder also holds state.json and the corners artifact."""
    store.put_bytes("pipelines/p/state.json", b"{}")
    write_artifact(store, "corners", "pipelines/p/corners", {"corners.json": b"[]"})
    write_artifact(store, "pipeline-report", "pipelines/p", {"report.html": b"1"})
    write_artifact(store, "pipeline-report", "pipelines/p", {"report.html": b"2"}, overwrite=True)
    assert store.exists("pipelines/p/state.json") and list(read_manifest(store, "pipelines/p/corners").files)
    assert list(read_manifest(store, "pipelines/p").files) == ["report.html"]


def test_two_writers_of_one_id_one_is_refused_at_once(store):
    first = Staging(store, "grids/g1")
    with pytest.raises(AlreadyExists, match="being written by another operation"):
        Staging(store, "grids/g1")
    first.put_bytes("grid.json", b"{}")
    first.commit("grid")
    with pytest.raises(AlreadyExists, match="already exists"):
        Staging(store, "grids/g1")


def test_racing_commits_of_one_id_commit_once(store):
    """Two threads (standing in for two replicas) commit the same id: exactly one manifest, one AlreadyExists."""
    outcomes, barrier = [], threading.Barrier(2)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            write_artifact(store, "renders", "renders/race", {"0.wav": f"writer {i}".encode()})
            outcomes.append("ok")
        except AlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists", "ok"]
    verify_artifact(store, "renders/race")


def test_names_inside_one_operation_follow_the_tree_rule(store):
    with Staging(store, "renders/r3") as out:
        out.put_bytes("a", b"1")
        with pytest.raises(FailedPrecondition, match="never both"):
            out.put_bytes("a/b", b"2")


def test_sweeper_removes_only_stale_staging_and_claims(store):
    old = Staging(store, "samples/old")
    old.put_bytes("0.wav", b"x")  # a crashed operation: never committed nor aborted
    fresh = Staging(store, "samples/fresh")
    fresh.put_bytes("0.wav", b"y")
    assert sweep(store, 3600) == []
    removed = sweep(store, 0, now=time.time() + 2)
    assert f".staging/{old.op}" in removed and len([r for r in removed if r.startswith(CLAIMS)]) == 2
    assert store.list(".staging") == [] and store.list() == []
    Staging(store, "samples/old").abort()  # its claim went with the sweep


def test_smf_store_sweep_and_init(store, monkeypatch, capsys):
    from smf.cli import main

    monkeypatch.setattr("smf.cli.COMMAND_MODULES", ["smf.store_cli"])
    crashed = Staging(store, "samples/crashed")
    crashed.put_bytes("0.wav", b"x")
    assert main(["store", "sweep", "--store", store.uri, "--older-than", "0"]) == 0
    assert f".staging/{crashed.op}" in capsys.readouterr().out and store.list(".staging") == []
    assert main(["store", "init", "--store", store.uri]) == 0


def test_s3_without_conditional_writes_falls_back_to_head_then_put(s3_store):
    s3_store._conditional = False  # as found by the probe on a server that ignores If-None-Match
    s3_store.put_bytes("m/manifest.json", b"1", if_absent=True)
    with pytest.raises(AlreadyExists):
        s3_store.put_bytes("m/manifest.json", b"2", if_absent=True)
    assert s3_store.get_bytes("m/manifest.json") == b"1"


def test_s3_conditional_writes_are_probed_on_seaweedfs(s3_store, monkeypatch):
    monkeypatch.setattr("smf.common._store_s3._CONDITIONAL", {})  # probe now, not from this process's memory
    assert s3_store._conditional_supported() is True  # SeaweedFS answers 412 to a second If-None-Match PUT
    assert s3_store.list(".staging") == []  # the probe object is gone


def test_a_staged_file_replaced_before_the_commit_is_not_published(store):
    out = Staging(store, "renders/tampered")
    out.put_bytes("0.wav", b"ours")
    store.put_bytes(f"{out.root}/0.wav", b"someone else's")  # a client with write access to the store
    with pytest.raises(DataCorruption, match="changed before the commit"):
        out.commit("renders")
    with pytest.raises(NotFound):
        read_manifest(store, "renders/tampered")
    assert store.list(".staging") == [] and store.list("renders") == []
