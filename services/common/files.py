"""Atomic local writes: the one temp-file-then-replace, so a reader (or a crash) never sees half a file.

    with atomic_write("out/voice.wav") as f:          # a binary file object in the same folder
        f.write(data)                                 # on success: flush, fsync, os.replace onto the path
    atomic_write_bytes("grid.json", b"{}")
    with atomic_path("kernel.so") as tmp:             # for tools that write by name (a compiler, torch.jit.save)
        subprocess.run(["cc", "-o", tmp, ...], check=True)

The temp file sits in the destination's folder (os.replace is atomic only within one filesystem) and starts with
`.tmp-`, so listings that skip dot-files skip it. On any error it is removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes"]

PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike, *, prefix: str = PREFIX, fsync: bool = True) -> Iterator[str]:
    """A temp path next to `path`; replaces `path` with it when the block ends without an error."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, prefix: str = PREFIX) -> Iterator[IO]:
    """A file object (`mode` "wb" or "w", utf-8) whose content replaces `path` when the block ends cleanly."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode 'wb' or 'w', not {mode!r}")
    with atomic_path(path, prefix=prefix, fsync=False) as tmp:
        with open(tmp, "wb") if mode == "wb" else open(tmp, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, prefix: str = PREFIX) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path, prefix=prefix) as f:
        f.write(data)
