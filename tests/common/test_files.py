"""The one atomic local write: all or nothing, temp file next to the target, nothing left behind."""

from __future__ import annotations

import os

import pytest
from smf.common.files import atomic_path, atomic_write, atomic_write_bytes


def test_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.json"]
    with atomic_write(target, "w") as f:
        f.write("new é")
    assert target.read_text(encoding="utf-8") == "new é" and os.listdir(tmp_path) == ["out.json"]


def test_atomic_path_for_tools_that_write_by_name(tmp_path):
    target = tmp_path / "kernel.so"
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".tmp-")
        with open(tmp, "wb") as f:
            f.write(b"\x7fELF")
        assert not target.exists()
    assert target.read_bytes() == b"\x7fELF"
    with pytest.raises(OSError), atomic_path(target) as tmp:
        raise OSError("the compiler failed")
    assert target.read_bytes() == b"\x7fELF" and os.listdir(tmp_path) == ["kernel.so"]
    with pytest.raises(ValueError):
        with atomic_write(target, "ab"):
            pass
