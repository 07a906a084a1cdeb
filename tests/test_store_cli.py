"""`smf store ls|cp|cat|url`, run through `smf.cli.main` as a user would, on both backends."""

from __future__ import annotations

import hashlib
import os
import urllib.request

import pytest
from smf.cli import main
from support.corrupt import corrupt_object


@pytest.fixture(autouse=True)
def only_store_commands(monkeypatch):
    # Other areas' CLI modules are built in parallel; a half-written one must not fail the store's tests.
    monkeypatch.setattr("smf.cli.COMMAND_MODULES", ["smf.store_cli"])


@pytest.fixture
def cli(store):
    """Run `smf store ACTION … --store <the test's store>`; returns the exit code."""

    def run(action: str, *args: str) -> int:
        return main(["store", action, "--store", store.uri, *args])

    return run


def test_ls_and_ls_long(cli, store, capsys):
    store.put_bytes("gan/run1/config.json", b"{}")
    store.put_bytes("gan/run1/ckpt/step-1.pt", b"12345")
    store.put_bytes("grids/g/grid.json", b"[]")
    assert cli("ls") == 0
    assert capsys.readouterr().out.split() == ["gan/run1/ckpt/step-1.pt", "gan/run1/config.json", "grids/g/grid.json"]
    assert cli("ls", "-l", "gan") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    size, _, _, sha12, key = lines[0].split()
    assert (size, key, sha12) == ("5", "gan/run1/ckpt/step-1.pt", hashlib.sha256(b"12345").hexdigest()[:12])


def test_ls_takes_a_full_uri(store, capsys):
    store.put_bytes("a/b", b"1")
    assert main(["store", "ls", store.key_uri("a")]) == 0
    assert capsys.readouterr().out.split()[-1].endswith("a/b")


def test_cp_up_down_and_cat(cli, store, tmp_path, capsysbinary):
    src = tmp_path / "in.wav"
    src.write_bytes(os.urandom(10_000))
    assert cli("cp", str(src), "store:datasets/x/in.wav") == 0
    assert store.get_bytes("datasets/x/in.wav") == src.read_bytes()
    assert cli("cp", str(src), "store:datasets/y/") == 0  # trailing '/' -> keep the file name
    assert store.exists("datasets/y/in.wav")

    out = tmp_path / "down" / "copy.wav"
    assert cli("cp", "store:datasets/x/in.wav", str(out)) == 0
    assert out.read_bytes() == src.read_bytes()
    assert main(["store", "cp", store.key_uri("datasets/x/in.wav"), str(tmp_path / "viauri.wav")]) == 0
    assert (tmp_path / "viauri.wav").read_bytes() == src.read_bytes()

    capsysbinary.readouterr()
    assert cli("cat", "datasets/x/in.wav") == 0
    assert capsysbinary.readouterr().out == src.read_bytes()


def test_cp_recursive_both_ways(cli, store, tmp_path):
    local = tmp_path / "mydata"
    (local / "sub").mkdir(parents=True)
    (local / "a.wav").write_bytes(b"a")
    (local / "sub" / "b.params").write_bytes(b"{}")
    assert cli("cp", "-r", str(local), "store:datasets/mine") == 0
    assert store.list("datasets/mine") == ["datasets/mine/a.wav", "datasets/mine/sub/b.params"]
    back = tmp_path / "back"
    assert cli("cp", "-r", "store:datasets/mine", str(back)) == 0
    assert (back / "sub" / "b.params").read_bytes() == b"{}" and (back / "a.wav").read_bytes() == b"a"
    assert cli("cp", "-r", "store:datasets/mine", "store:datasets/copy") == 0  # store -> store
    assert store.list("datasets/copy") == ["datasets/copy/a.wav", "datasets/copy/sub/b.params"]


def test_url_is_downloadable(cli, store, capsys):
    store.put_bytes("renders/r/0.wav", b"RIFF-data")
    assert cli("url", "renders/r/0.wav", "--expires", "120") == 0
    url = capsys.readouterr().out.strip()
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"RIFF-data"


def test_errors_are_one_line_messages(cli, store, tmp_path, capsys):
    assert cli("cat", "no/such") == 1
    assert "no/such" in capsys.readouterr().err
    assert cli("cat", "../etc/passwd") == 1
    assert "key:" in capsys.readouterr().err
    assert cli("cp", str(tmp_path / "absent"), "store:x") == 1
    assert "no such file" in capsys.readouterr().err
    assert cli("cp", "a", "b") == 1  # two local paths
    assert "one side of cp" in capsys.readouterr().err


def test_corrupt_object_is_not_printed(cli, store, capsysbinary):
    store.put_bytes("k", b"secret-ish payload")
    corrupt_object(store, "k")
    capsysbinary.readouterr()
    assert cli("cat", "k") == 1
    captured = capsysbinary.readouterr()
    assert captured.out == b"" and b"sha256 mismatch" in captured.err
