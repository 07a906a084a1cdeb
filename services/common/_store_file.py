"""The `file://` backend of the store: objects are plain files under a root folder.

Layout under the root:
    <key>                          the object's bytes, exactly as written (a user can open it directly)
    .smf-meta/<dir>/.smf-<name>.json   sidecar of <dir>/<name>: {"sha256", "size", "content_type", "file"}
    .smf-meta/.smf-lock            taken (flock) by exclusive creates (`put_bytes(..., if_absent=True)`)
    .../.smf-tmp-*                 in-flight writes; renamed into place, never listed

A sidecar's name starts with `.smf-`, which no key segment may, so it can never collide with the folder of another
key (the old layout `.smf-meta/<key>.json` did: `K` and `K.json/x` fought over one path; it is still read).

Writes go to a temp file in the destination folder, are fsynced and then `os.replace`d, so a reader sees the old
object or the new one. The sidecar is committed just before the data and names the file (inode) it describes:
a reader racing an overwrite waits for the pair to agree, and a crash between the two renames leaves either no
object (new key) or an old object whose sidecar is not its own, which reads report as DataCorruption — never a
silent mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from smf.common.errors import AlreadyExists, DataCorruption, InvalidArgument, NotFound
from smf.common.files import atomic_write_bytes
from smf.common.store import (
    CHUNK,
    RESERVED,
    ObjectInfo,
    Store,
    _file_uri,
    content_type_for,
    corruption,
    hidden,
    tree_conflict,
    validate_key,
    validate_prefix,
)

META = ".smf-meta"


class FileStore(Store):
    """Store backend over a local folder (created if missing). `FileStore("/data/smf")`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        try:
            # The meta folder doubles as the marker `parse_uri` uses to find a store root.
            (self.root / META).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument("uri", f"cannot create store folder {self.root}: {exc.strerror}") from None
        self.uri = _file_uri(self.root)

    # --- paths ------------------------------------------------------------------------------------------------
    def _data(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta(self, key: str) -> Path:
        folder, _, name = validate_key(key).rpartition("/")
        return self.root / META / folder / f"{RESERVED}{name}.json"

    def _old_meta(self, key: str) -> Path:
        return self.root / META / (validate_key(key) + ".json")

    def _read_meta(self, key: str) -> dict:
        try:
            return json.loads(self._meta(key).read_text())
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as exc:
            raise DataCorruption(f"{self.key_uri(key)}: unreadable metadata sidecar ({exc})") from None
        old = self._old_meta(key)  # a store written before the sidecar rename
        if not old.is_file():
            return {}
        try:
            return json.loads(old.read_text())
        except (ValueError, OSError) as exc:
            raise DataCorruption(f"{self.key_uri(key)}: unreadable metadata sidecar ({exc})") from None

    # --- writes -----------------------------------------------------------------------------------------------
    def _write(self, key: str, chunks: Iterator[bytes], content_type: str | None) -> str:
        dest = self._data(key)
        meta = self._meta(key)
        self._mkdirs(key, dest.parent, meta.parent)
        if dest.is_dir():  # before anything is written, so a refused key leaves nothing behind
            raise tree_conflict(self.uri, key, key + "/…")
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=RESERVED + "tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
                inode = os.fstat(f.fileno()).st_ino
            sha = h.hexdigest()
            # `file` ties the sidecar to this very file (the inode survives the rename), so a reader racing an
            # overwrite can tell "sidecar of another version" from real corruption.
            record = {
                "sha256": sha,
                "size": size,
                "content_type": content_type_for(key, content_type),
                "file": [inode, size],
            }
            _atomic_write(meta, json.dumps(record).encode())
            os.replace(tmp, dest)
            if self._old_meta(key).is_file():  # the old-layout sidecar of a previous version
                self._old_meta(key).unlink()
            _fsync_dir(dest.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def _mkdirs(self, key: str, data_dir: Path, meta_dir: Path) -> None:
        # Find the object in the way before creating any folder, so a refused key leaves no empty folder behind.
        parts = key.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[:n])
            if (self.root / parent).is_file():
                raise tree_conflict(self.uri, key, parent)
        for d in (data_dir, meta_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):  # an object appeared meanwhile (or a stray file)
                raise tree_conflict(self.uri, key, d.relative_to(self.root).as_posix()) from None

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument("data", f"expected bytes, got {type(data).__name__}")
        if not if_absent:
            return self._write(key, iter([bytes(data)]), content_type)
        with self._exclusive():
            if self._data(key).is_file():
                if self._read_meta(key).get("sha256") == hashlib.sha256(data).hexdigest():
                    return self._read_meta(key)["sha256"]  # the same bytes: a repeated create, as on S3
                raise AlreadyExists(f"{self.key_uri(key)} already exists")
            return self._write(key, iter([bytes(data)]), content_type)

    @contextlib.contextmanager
    def _exclusive(self):
        """One exclusive create at a time across processes on this host (file stores are local)."""
        with open(self.root / META / f"{RESERVED}lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def move(self, src: str, dst: str) -> None:
        source, dest = self._data(src), self._data(dst)
        if not source.is_file():
            raise NotFound(f"{self.key_uri(src)}: no such object")
        meta = self._read_meta(src)
        self._mkdirs(dst, dest.parent, self._meta(dst).parent)
        # The sidecar names the file by inode, which a rename keeps: write it first, as _write does.
        _atomic_write(self._meta(dst), json.dumps(meta).encode())
        os.replace(source, dest)
        self._forget_meta(src)
        self._prune(source.parent)
        self._prune(self._meta(src).parent)

    def _forget_meta(self, key: str) -> None:
        self._meta(key).unlink(missing_ok=True)
        old = self._old_meta(key)
        if old.is_file():
            old.unlink()

    def put_file(self, key: str, path: str | os.PathLike, *, content_type: str | None = None) -> str:
        validate_key(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below; the open alone gets a clear error
        except OSError as exc:
            raise InvalidArgument(os.fspath(path), f"cannot read: {exc.strerror}") from None
        with f:
            return self._write(key, iter(lambda: f.read(CHUNK), b""), content_type)

    # --- reads ------------------------------------------------------------------------------------------------
    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        path = self._data(key)  # validate before the generator starts, so bad keys fail at the call
        return self._iter(key, path, chunk_size)

    def _open(self, key: str, path: Path):
        """Open the object and the sidecar that describes that same file.

        A writer replaces the sidecar and then the data, so for a moment a reader can hold the old file and the
        new sidecar; it then reopens (nothing has been yielded yet). If they never agree, a write was cut off
        between the two renames, and the object is reported as corrupt.
        """
        deadline = time.monotonic() + 2.0
        while True:
            try:
                f = open(path, "rb")  # noqa: SIM115 - the caller closes it
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise NotFound(f"{self.key_uri(key)}: no such object") from None
            meta = self._read_meta(key)
            st = os.fstat(f.fileno())
            if not meta.get("sha256"):
                f.close()
                raise DataCorruption(f"{self.key_uri(key)}: no sha256 recorded (not written through the store)")
            if meta.get("file") == [st.st_ino, st.st_size]:
                return f, meta["sha256"]
            f.close()
            if time.monotonic() > deadline:
                raise DataCorruption(
                    f"{self.key_uri(key)}: its recorded sha256 belongs to another version of the "
                    "file (an interrupted write, or the file was replaced outside the store)"
                )
            time.sleep(0.005)

    def _iter(self, key: str, path: Path, chunk_size: int) -> Iterator[bytes]:
        f, recorded = self._open(key, path)
        with f:
            h = hashlib.sha256()
            while chunk := f.read(chunk_size):
                h.update(chunk)
                yield chunk
        if h.hexdigest() != recorded:
            raise corruption(self.key_uri(key), recorded, h.hexdigest())

    def stat(self, key: str) -> ObjectInfo:
        path = self._data(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.key_uri(key)}: no such object") from None
        if path.is_dir():
            raise NotFound(f"{self.key_uri(key)}: no such object (it is a prefix)")
        return ObjectInfo(key, st.st_size, self._read_meta(key).get("sha256", ""), st.st_mtime)

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        top = self.root / prefix if prefix else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED)]  # skips .smf-meta at the root
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith(RESERVED):
                    keys.append(name if rel == "." else f"{rel}/{name}")
        return sorted(k for k in keys if prefix or not hidden(k))

    # --- deletes ----------------------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        path = self._data(key)
        try:
            if path.is_dir():
                raise FileNotFoundError
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.key_uri(key)}: no such object") from None
        self._forget_meta(key)
        self._prune(path.parent)
        self._prune(self._meta(key).parent)

    def delete_prefix(self, prefix: str) -> None:
        prefix = validate_prefix(prefix)
        if not prefix:
            raise InvalidArgument("prefix", "must not be empty (refusing to delete the whole store)")
        for top in (self.root / prefix, self.root / META / prefix):
            if top.is_dir():
                shutil.rmtree(top)
        self._prune((self.root / prefix).parent)
        self._prune((self.root / META / prefix).parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty by deletes, up to (not including) the root and the meta root."""
        stops = {self.root, self.root / META}
        while folder not in stops and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or a concurrent writer just used it): stop here
                return
            folder = folder.parent

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        self.stat(key)  # NotFound now rather than a dead link later
        return _file_uri(self._data(key))


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, prefix=RESERVED + "tmp-")


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (the directory entry), not just the file contents."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
