"""The artifact store: one interface over a local folder (`file://`) and an S3 bucket (`s3://`).

Every service reads and writes its artifacts (datasets, checkpoints, grids, renders) through this, so the same code
runs on a laptop (embedded default `~/.smf/store`) and in a cluster (an S3 bucket: SeaweedFS, MinIO, AWS):

    store = open_store()                          # $SMF_STORE or file://~/.smf/store
    store = open_store("s3://smf/team-a")         # endpoint + keys from $SMF_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY
    sha = store.put_file("gan/run1/ckpt/step-100.pt", "/tmp/ckpt.pt")
    store.get_file("gan/run1/ckpt/step-100.pt", "/tmp/copy.pt")   # verified against the recorded sha256

Guarantees on both backends: writes are atomic (a reader sees the old object or the new one, never half of one), the
sha256 of every object is recorded at write time and checked on every read (`DataCorruption` naming the key), keys
are validated before they touch a path or URL, and failures come out as `smf.common.errors` (NotFound,
PermissionDenied, Unavailable ...). The backends live in `_store_file.py` and `_store_s3.py`.

Both backends keep one tree: a key is an object or a folder of objects, never both (`a` and `a/b` cannot both
exist; S3 itself would allow it, a filesystem cannot, so S3 refuses it too): FailedPrecondition naming the keys.
Keys under `.staging/` belong to the commit protocol (`smf.common.commit`): `list("")` does not show them.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smf.common.errors import DataCorruption, FailedPrecondition, InvalidArgument, NotFound
from smf.common.files import atomic_write

__all__ = [
    "DEFAULT_STORE",
    "STAGING",
    "ObjectInfo",
    "Store",
    "canonical_uri",
    "default_store_uri",
    "open_store",
    "parse_uri",
    "validate_client_key",
    "validate_key",
    "validate_prefix",
]

DEFAULT_STORE = "~/.smf/store"
CHUNK = 1 << 20

# Names starting with this are the store's own bookkeeping (sidecars, temp files); keys may not use them.
RESERVED = ".smf-"
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# The commit protocol's work area (smf.common.commit): staged files of operations in flight and id claims.
STAGING = ".staging"


@dataclass(frozen=True)
class ObjectInfo:
    """What `Store.stat` knows about one object. `sha256` is the digest recorded at write time ("" if none)."""

    key: str
    size: int
    sha256: str
    modified: float  # unix seconds


MAX_KEY = 1024  # S3 object key limit
MAX_SEGMENT = 200  # below the 255-byte file name limit, leaving room for the file store's temp suffixes


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidArgument("key", ...).

    Keys are `/`-separated segments of `[A-Za-z0-9._-]`; no empty, `.` or `..` segments, no leading `/`, so a key
    can never escape the store root on disk nor change meaning in a URL.
    """
    if not isinstance(key, str) or not key:
        raise InvalidArgument("key", f"must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise InvalidArgument("key", f"{key!r} must be relative (no leading '/')")
    if len(key) > MAX_KEY:  # S3's limit; also keeps file-store paths inside what filesystems accept
        raise InvalidArgument("key", f"{key[:40]!r}... is {len(key)} characters long, the limit is {MAX_KEY}")
    for segment in key.split("/"):
        if len(segment) > MAX_SEGMENT:
            raise InvalidArgument(
                "key", f"segment {segment[:40]!r}... is {len(segment)} characters long, the limit is {MAX_SEGMENT}"
            )
        if not segment:
            raise InvalidArgument("key", f"{key!r} has an empty path segment")
        if segment in (".", ".."):
            raise InvalidArgument("key", f"{key!r} may not contain '.' or '..' segments")
        if not _SEGMENT.fullmatch(segment):
            bad = sorted({c for c in segment if not _SEGMENT.fullmatch(c)})
            raise InvalidArgument("key", f"{key!r} has characters outside [A-Za-z0-9._/-]: {''.join(bad)!r}")
        if segment.startswith(RESERVED):
            raise InvalidArgument("key", f"{key!r}: segments starting with {RESERVED!r} are reserved for the store")
    return key


def validate_client_key(key: str) -> str:
    """`validate_key` for a key a client names to write (ArtifactService Upload): keys under `.staging/` belong to
    the commit protocol — a client writing there could swap an operation's staged file or hold its claim."""
    key = validate_key(key)
    if hidden(key):
        raise InvalidArgument("key", f"{key!r}: keys under {STAGING}/ belong to the store's commit protocol")
    return key


def validate_prefix(prefix: str) -> str:
    """Normalise a folder prefix for list/delete_prefix: "" (everything) or a valid key, trailing '/' optional.

    Returns "" or the prefix without its trailing '/'. A prefix names a folder: "gan/run1" does not match
    "gan/run10/...".
    """
    if prefix in ("", "/"):
        return ""
    try:
        return validate_key(prefix.removesuffix("/"))
    except InvalidArgument as exc:
        raise InvalidArgument("prefix", exc.message.split(": ", 1)[1]) from None


def content_type_for(key: str, content_type: str | None) -> str:
    """The content type to record: the caller's, else a guess from the extension (so browsers play .wav URLs)."""
    if content_type:
        return content_type
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def file_sha256(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256 hex, size) of a local file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class Store:
    """The store interface. Backends implement the abstract methods; reads are built on `iter_chunks`."""

    uri: str

    # --- implemented by the backends -------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False) -> str:
        """Write `data` at `key` atomically; returns its sha256 hex. `if_absent`: AlreadyExists if `key` exists
        with other bytes, decided by the store itself (an exclusive create), so two writers racing for one key
        cannot both win; the same bytes again succeed (a retried request whose first answer was lost)."""
        raise NotImplementedError

    def move(self, src: str, dst: str) -> None:
        """Move an object (bytes and recorded sha256) to `dst`, replacing what is there: a rename on the file
        backend, a server-side copy then delete on S3. Used by the commit protocol; `dst`'s tree is not checked."""
        raise NotImplementedError

    def put_file(self, key: str, path: str | os.PathLike, *, content_type: str | None = None) -> str:
        """Upload a local file, streaming (multipart on S3); atomic; returns its sha256 hex."""
        raise NotImplementedError

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Stream an object. The sha256 is checked after the last chunk: DataCorruption is raised *then*, so a
        caller that acts on chunks as they come must be ready to undo."""
        raise NotImplementedError

    def stat(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Every key under the folder `prefix` (recursive), sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under the folder `prefix` (which must not be empty)."""
        raise NotImplementedError

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL that fetches the object without smf credentials: http(s) on S3, file:// on the file backend."""
        raise NotImplementedError

    def key_uri(self, key: str) -> str:
        """The full URI of `key`, e.g. s3://bucket/prefix/key; `parse_uri` splits it back."""
        return f"{self.uri}/{validate_key(key)}"

    # --- shared -----------------------------------------------------------------------------------------------
    def check_tree(self, key: str) -> None:
        """FailedPrecondition if `key` cannot join the tree: one of its parent folders is an object, or `key` is
        already a folder of other objects. The file backend gets this from the filesystem; S3 asks (a few HEADs)."""
        validate_key(key)
        parts = key.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[:n])
            if self.exists(parent):
                raise tree_conflict(self.uri, key, parent)
        if self.list(key):
            raise tree_conflict(self.uri, key, key + "/…")

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory, sha256 verified."""
        return b"".join(self.iter_chunks(key))

    def get_file(self, key: str, path: str | os.PathLike) -> str:
        """Download to `path` (streamed, atomic: nothing appears at `path` unless the sha256 matched)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with atomic_write(path, prefix=f".{path.name}.") as f:
            for chunk in self.iter_chunks(key):
                f.write(chunk)
                h.update(chunk)
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def tree_conflict(uri: str, key: str, other: str) -> FailedPrecondition:
    """The error for a key that would be both an object and a folder (`a` and `a/b`)."""
    if other.endswith("/…"):
        why = f"{key!r} is a folder of other objects ({other})"
    else:
        why = f"{other!r} is an object, so {key!r} cannot be put inside it"
    return FailedPrecondition(
        f"key {key!r} in {uri}: {why}; a key is an object or a folder, never both — "
        f"pick another key or delete {other!r}"
    )


def hidden(key: str) -> bool:
    """True for the commit protocol's own keys, which a listing of the whole store leaves out."""
    return key == STAGING or key.startswith(STAGING + "/")


def corruption(uri: str, recorded: str, actual: str) -> DataCorruption:
    return DataCorruption(
        f"{uri}: sha256 mismatch, recorded {recorded[:16]}… but the stored bytes hash to {actual[:16]}…"
    )


def _file_uri(path: str | os.PathLike) -> str:
    return "file://" + urllib.parse.quote(os.path.abspath(os.path.expanduser(os.fspath(path))))


def canonical_uri(uri: str) -> str:
    """Canonical store URI: file:///abs/path (no trailing /) or s3://bucket[/prefix]."""
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    if uri.startswith("file://"):
        path = urllib.parse.unquote(uri[len("file://") :])
        if not path.startswith("/") and not path.startswith("~"):
            raise InvalidArgument("uri", f"{uri!r}: a file:// store needs an absolute path (file:///abs/dir)")
        return _file_uri(path)
    if "://" in uri:
        raise InvalidArgument("uri", f"{uri!r}: unsupported scheme; use file:///abs/dir or s3://bucket/prefix")
    return _file_uri(uri)  # a plain path, e.g. SMF_STORE=/data/smf


def default_store_uri() -> str:
    return canonical_uri(os.environ.get("SMF_STORE") or DEFAULT_STORE)


def open_store(uri: str | None = None) -> Store:
    """Open the store at `uri` (None -> $SMF_STORE or file://~/.smf/store). A plain path means a file store."""
    uri = canonical_uri(uri) if uri else default_store_uri()
    if uri.startswith("s3://"):
        return S3Store.from_uri(uri)
    return FileStore(urllib.parse.unquote(uri[len("file://") :]))


def parse_uri(uri: str) -> tuple[str, str]:
    """Split a full artifact URI into (store URI, key).

    s3://bucket/a/b/c -> ("s3://bucket", "a/b/c") unless the configured store ($SMF_STORE) is a longer prefix of it;
    file:///x/root/a/b -> the nearest enclosing folder that holds a store (its `.smf-meta/` tree) and the rest.
    """
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidArgument("uri", f"{uri!r} is not a store URI (file:///... or s3://...)")
    default = default_store_uri()
    if uri.startswith(default + "/"):
        return default, validate_key(uri[len(default) + 1 :])
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key:
            raise InvalidArgument("uri", f"{uri!r}: expected s3://bucket/key")
        return f"s3://{bucket}", validate_key(key)
    if uri.startswith("file://"):
        path = Path(urllib.parse.unquote(uri[len("file://") :]))
        for root in path.parents:
            if (root / ".smf-meta").is_dir():
                return _file_uri(root), validate_key(path.relative_to(root).as_posix())
        raise InvalidArgument("uri", f"{uri!r} is not inside an smf store (no .smf-meta folder above it)")
    raise InvalidArgument("uri", f"{uri!r}: unsupported scheme; use file:///abs/dir or s3://bucket/prefix")


# The backends import the base above, so they come last.
from smf.common._store_file import FileStore  # noqa: E402
from smf.common._store_s3 import S3Store  # noqa: E402

__all__ += ["FileStore", "S3Store"]
