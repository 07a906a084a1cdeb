"""Artifact manifests on both store backends: write, read, verify, and what breaks verification."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

import pytest
import smf
from smf.common.errors import DataCorruption, InvalidArgument, NotFound
from smf.common.lineage import (
    Manifest,
    commit_artifact,
    created_by,
    list_artifacts,
    new_id,
    read_manifest,
    verify_artifact,
    write_artifact,
)


def test_write_read_verify(store, tmp_path):
    latent = tmp_path / "0.pt"
    latent.write_bytes(b"latent-bytes")
    aid = "samples/" + new_id()
    m = write_artifact(
        store,
        "samples",
        aid,
        {"0.wav": b"RIFFwav", "0.pt": latent},
        config={"n": 1, "seed": 3},
        inputs=["gan/run1"],
        service="gan",
    )
    assert m.files == {
        "0.pt": hashlib.sha256(b"latent-bytes").hexdigest(),
        "0.wav": hashlib.sha256(b"RIFFwav").hexdigest(),
    }
    assert store.list(aid) == [f"{aid}/0.pt", f"{aid}/0.wav", f"{aid}/manifest.json"]

    raw = json.loads(store.get_bytes(f"{aid}/manifest.json"))
    assert list(raw) == ["kind", "id", "created_at", "created_by", "config", "inputs", "files"]  # ARCHITECTURE §3
    assert raw["kind"] == "samples" and raw["id"] == aid and raw["inputs"] == ["gan/run1"]
    assert raw["created_by"]["service"] == "gan" and raw["created_by"]["version"] == smf.__version__
    assert raw["created_by"]["git_sha"]
    assert datetime.fromisoformat(raw["created_at"]).tzinfo is not None

    assert read_manifest(store, aid) == m
    verify_artifact(store, aid)
    assert store.get_bytes(f"{aid}/0.pt") == b"latent-bytes"


def test_verify_detects_a_replaced_file(store):
    write_artifact(store, "grid", "grids/g1", {"grid.json": b"{}", "cells/a.wav": b"a"})
    store.put_bytes("grids/g1/cells/a.wav", b"b")  # a valid object, but not the one the manifest recorded
    with pytest.raises(DataCorruption, match="cells/a.wav"):
        verify_artifact(store, "grids/g1")


def test_verify_detects_a_missing_file(store):
    write_artifact(store, "grid", "grids/g2", {"grid.json": b"{}", "mosaic.png": b"png"})
    store.delete("grids/g2/mosaic.png")
    with pytest.raises(DataCorruption, match="mosaic.png.*missing"):
        verify_artifact(store, "grids/g2")


def test_unfinished_or_absent_artifact_is_not_found(store):
    store.put_bytes("gan/half/ckpt/step-1.pt", b"x")  # files written, manifest (commit point) never came
    with pytest.raises(NotFound, match="gan/half"):
        read_manifest(store, "gan/half")
    with pytest.raises(NotFound):
        verify_artifact(store, "gan/nothing")
    assert list_artifacts(store, "gan") == []


def test_commit_artifact_records_files_written_earlier(store):
    store.put_bytes("gan/run1/ckpt/step-1.pt", b"1")
    store.put_bytes("gan/run1/progress.json", b"{}")
    m = commit_artifact(store, "gan", "gan/run1", config={"lr": 1e-3}, service="gan")
    assert sorted(m.files) == ["ckpt/step-1.pt", "progress.json"]
    verify_artifact(store, "gan/run1")
    write_artifact(store, "gan", "gan/run2", {"config.json": b"{}"})
    assert list_artifacts(store, "gan") == ["gan/run1", "gan/run2"]


def test_bad_arguments_write_nothing(store, tmp_path):
    for files, field in [
        ({"../x": b"1"}, "files['../x']"),
        ({"manifest.json": b"{}"}, "files['manifest.json']"),
        ({"a": "text"}, "files['a']"),
        ({"a": tmp_path / "absent"}, "files['a']"),
        ({"a": 3}, "files['a']"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            write_artifact(store, "k", "art/x", {"ok.bin": b"1", **files})
        assert e.value.field == field
    with pytest.raises(InvalidArgument) as e:
        write_artifact(store, "k", "../x", {"a": b"1"})
    assert e.value.field == "artifact_id"
    assert store.list() == []
    with pytest.raises(InvalidArgument) as e:
        write_artifact(store, "k", "art/y", {"a": b"1"}, config={"bad": object()})
    assert e.value.field == "config"


def test_malformed_manifest_is_data_corruption(store):
    store.put_bytes("x/manifest.json", b'{"kind": "x"}')
    with pytest.raises(DataCorruption, match="missing fields"):
        read_manifest(store, "x")


def test_new_id_is_sortable_and_unique():
    ids = [new_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", i) for i in ids)
    assert [i[:15] for i in ids] == sorted(i[:15] for i in ids)
    assert new_id("samples/").startswith("samples/")


def test_created_by_git_sha(monkeypatch):
    from smf.common import lineage

    lineage._git_sha.cache_clear()
    monkeypatch.setenv("SMF_GIT_SHA", "abc123")
    assert created_by("som") == {"service": "som", "version": smf.__version__, "git_sha": "abc123"}
    lineage._git_sha.cache_clear()
    monkeypatch.delenv("SMF_GIT_SHA")
    sha = created_by()["git_sha"]
    assert sha == "unknown" or re.fullmatch(r"[0-9a-f]{40}", sha)
    lineage._git_sha.cache_clear()


def test_manifest_json_round_trip():
    m = Manifest(
        kind="rnn",
        id="rnn/r1",
        created_at="2026-11-25T20:30:00+00:00",
        created_by={"service": "rnn", "version": "0.1.0", "git_sha": "unknown"},
        config={"a": [1, 2]},
        inputs=["grids/g1"],
        files={"export/model.ts": "0" * 64},
    )
    assert Manifest.from_json(m.to_json()) == m
