"""The `s3://bucket/prefix` backend of the store (minio SDK; works with SeaweedFS, MinIO, AWS S3).

Connection settings come from the environment so that a URI alone names a store in every process (CLI, services,
training Jobs): SMF_S3_ENDPOINT (host:port or http(s)://host:port), SMF_S3_ACCESS_KEY, SMF_S3_SECRET_KEY,
optional SMF_S3_REGION, SMF_S3_RETRY_S (how long transient failures are retried, default 20 s) and
SMF_S3_CREATE_BUCKET (default 1: the first *write* creates the store's bucket if it is missing; 0: never — create
it with `smf store init` or the S3 server's own tools). Reads never create a bucket: a missing one is NotFound.

- Atomic writes come from S3 itself: a PUT, and a multipart upload's completion, publish the whole object at once.
- The sha256 is computed before the upload and sent as user metadata (x-amz-meta-sha256); reads recompute it.
- Transient failures (connection refused/reset, timeouts, 5xx, SlowDown) are retried with exponential backoff
  until SMF_S3_RETRY_S has passed, then raise Unavailable. Streaming reads resume at the byte they reached.
- Credentials the server rejects raise PermissionDenied naming the endpoint and access key id, never the secret.
- `put_bytes(..., if_absent=True)` sends `If-None-Match: *`, so the S3 server decides which of two writers creates
  a key (SeaweedFS >= 3.8x, MinIO, AWS since 2024 answer 412). A server that ignores the header is found by a probe
  on first use; then the store falls back to "HEAD, then PUT" (a race window between replicas; logged once).
- The tree rule (a key is an object or a folder, never both) is checked with a few HEADs and one LIST per write,
  except under `.staging/`, whose writer (the commit protocol) checks its own names.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from smf.common.errors import (
    AlreadyExists,
    DataCorruption,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SmfError,
    Unavailable,
)
from smf.common.store import (
    CHUNK,
    STAGING,
    ObjectInfo,
    Store,
    content_type_for,
    corruption,
    file_sha256,
    hidden,
    tree_conflict,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")
_Headers = dict[str, str | list[str] | tuple[str]]  # what minio's request methods take
_CONDITIONAL: dict[tuple[str, str], bool] = {}  # (endpoint, bucket) -> honours If-None-Match (probed once)
log = logging.getLogger("smf.store")

PART_SIZE = 16 << 20  # multipart above this; 16 MiB parts keep a 100 MB upload to 7 requests
SHA_META = "x-amz-meta-sha256"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PERMISSION = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_TRANSIENT = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "OperationAborted",
    "ServerBusy",
    "RequestTimeTooSkewed",
}


class _Transient(Exception):
    """Internal: a failure worth retrying; carries a short reason for the final Unavailable."""


class S3Store(Store):
    """Store backend over `s3://bucket/prefix`. Use `open_store(uri)` or `S3Store.from_uri(uri)`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        region: str | None = None,
        retry_s: float = 20.0,
        create_bucket: bool = True,
    ):
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise InvalidArgument("uri", f"{bucket!r} is not a valid S3 bucket name (3-63 of [a-z0-9.-])")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint, secure = _parse_endpoint(endpoint)
        self.access_key = access_key or ""
        self.retry_s = retry_s
        # Retries are ours (bounded, uniform across calls, resumable reads), so urllib3's own are off.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=120), maxsize=10, retries=False)
        self.client = Minio(
            self.endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region or None,
            http_client=http,
        )
        self.create_bucket = create_bucket
        self._bucket_ready = False
        self._conditional: bool | None = None  # does the server honour If-None-Match? (probed on first use)
        self._known_objects: set[str] = set()  # keys and folders check_tree has already found in their place
        self._known_folders: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str) -> S3Store:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        endpoint = os.environ.get("SMF_S3_ENDPOINT")
        if not endpoint:
            raise InvalidArgument(
                "SMF_S3_ENDPOINT", f"not set; it is needed to open {uri} (host:port or http(s)://host:port)"
            )
        try:
            retry_s = float(os.environ.get("SMF_S3_RETRY_S", "20"))
        except ValueError:
            raise InvalidArgument("SMF_S3_RETRY_S", "must be a number of seconds") from None
        return cls(
            bucket,
            prefix,
            endpoint=endpoint,
            access_key=os.environ.get("SMF_S3_ACCESS_KEY"),
            secret_key=os.environ.get("SMF_S3_SECRET_KEY"),
            region=os.environ.get("SMF_S3_REGION"),
            retry_s=retry_s,
            create_bucket=os.environ.get("SMF_S3_CREATE_BUCKET", "1") != "0",
        )

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run one S3 request with bounded exponential backoff on transient failures; translate the rest.
        Reads go through here and never create the bucket (a missing one is NotFound)."""
        return self._retry(what, key, fn)

    def _write_call(self, what: str, key: str | None, fn: Callable[[], T]) -> T:
        """`_call` for writes: the store's own bucket is created first if it is missing and creation is allowed."""
        self._ensure_bucket()
        return self._retry(what, key, fn)

    def _retry(self, what: str, key: str | None, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_s
        delay, attempts = 0.1, 0
        while True:
            attempts += 1
            try:
                return fn()
            except Exception as exc:
                err = self._translate(exc, key)
                if not isinstance(err, _Transient):
                    raise err from exc
                if time.monotonic() + delay > deadline:
                    raise Unavailable(
                        f"S3 endpoint {self.endpoint} unavailable while {what}"
                        f"{' ' + self._where(key) if key else ''}: {err} "
                        f"(gave up after {attempts} attempts in {self.retry_s:g} s)"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _where(self, key: str | None) -> str:
        return self.key_uri(key) if key else self.uri

    def _translate(self, exc: Exception, key: str | None) -> Exception:
        """Map an exception from minio/urllib3 to an SmfError, or to _Transient if a retry may help."""
        if isinstance(exc, SmfError):
            return exc
        if isinstance(exc, S3Error):
            code = exc.code or ""
            if code in ("NoSuchKey", "NoSuchObject"):
                return NotFound(f"{self._where(key)}: no such object")
            if code == "NoSuchBucket":
                return NotFound(f"{self._where(key)}: no such object (bucket {self.bucket!r} does not exist)")
            if code == "PreconditionFailed" and key:
                return AlreadyExists(f"{self.key_uri(key)} already exists")
            if code in _PERMISSION:
                reason = {
                    "InvalidAccessKeyId": "unknown access key id",
                    "SignatureDoesNotMatch": "secret key does not match access key id",
                }.get(code, "access denied for access key id")
                return PermissionDenied(
                    f"S3 endpoint {self.endpoint} rejected the credentials for {self.uri}: "
                    f"{reason} {self.access_key!r} ({code}); check SMF_S3_ACCESS_KEY and "
                    "SMF_S3_SECRET_KEY"
                )
            status = getattr(exc.response, "status", 0) or 0
            if code in _TRANSIENT or status >= 500:
                return _Transient(f"{code or status}: {exc.message}")
            return FailedPrecondition(
                f"S3 endpoint {self.endpoint} refused a request on {self._where(key)}: {code}: {exc.message}"
            )
        if isinstance(exc, ServerError):
            return (
                _Transient(f"HTTP {exc.status_code}")
                if exc.status_code >= 500
                else FailedPrecondition(f"S3 endpoint {self.endpoint}: {exc}")
            )
        if isinstance(exc, InvalidResponseError):
            status = getattr(exc, "_code", 0) or 0
            if status >= 500:
                return _Transient(f"HTTP {status}")
            return FailedPrecondition(
                f"S3 endpoint {self.endpoint} gave a non-S3 answer (HTTP {status}); is it an S3 server?"
            )
        if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
            return _Transient(_short(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return _Transient(_short(exc))
        if isinstance(exc, MinioException):
            return FailedPrecondition(f"S3 endpoint {self.endpoint}: {exc}")
        return exc

    def _ensure_bucket(self) -> None:
        """Create the bucket on the first write, so a fresh S3 server works with no setup step — unless the
        operator said not to (SMF_S3_CREATE_BUCKET=0), then a missing bucket is FailedPrecondition."""
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return

            def create() -> None:
                if self.client.bucket_exists(self.bucket):
                    return
                if not self.create_bucket:
                    raise FailedPrecondition(
                        f"bucket {self.bucket!r} does not exist on {self.endpoint} and SMF_S3_CREATE_BUCKET=0: "
                        f"create it first (smf store init {self.uri})"
                    )
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

            self._retry("creating the bucket", None, create)
            self._bucket_ready = True

    def init(self) -> None:
        """Create the bucket if missing (`smf store init`), whatever SMF_S3_CREATE_BUCKET says."""
        self.create_bucket = True
        self._ensure_bucket()

    # --- writes -----------------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument("data", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        name = self._name(key)
        sha = hashlib.sha256(data).hexdigest()
        self._check_put(key)
        if if_absent:
            self._put_if_absent(key, name, data, content_type_for(key, content_type), sha)
            return sha
        self._write_call(
            "writing",
            key,
            lambda: self.client.put_object(
                self.bucket,
                name,
                io.BytesIO(data),
                len(data),
                content_type=content_type_for(key, content_type),
                metadata={"sha256": sha},
            ),
        )
        return sha

    def put_file(self, key: str, path: str | os.PathLike, *, content_type: str | None = None) -> str:
        name = self._name(key)
        try:
            # The sha256 travels in the request headers, so it must be known before the first byte is sent.
            sha, _ = file_sha256(path)
        except OSError as exc:
            raise InvalidArgument(os.fspath(path), f"cannot read: {exc.strerror}") from None
        self._check_put(key)
        self._write_call(
            "writing",
            key,
            lambda: self.client.fput_object(
                self.bucket,
                name,
                os.fspath(path),
                content_type=content_type_for(key, content_type),
                metadata={"sha256": sha},
                part_size=PART_SIZE,
            ),
        )
        return sha

    def _check_put(self, key: str) -> None:
        if not hidden(key):
            self._ensure_bucket()
            self.check_tree(key)

    def check_tree(self, key: str) -> None:
        # Folders and objects this store has seen (by its own successful writes) are remembered, so a run writing
        # progress.json every few steps pays one PUT, not 3 HEADs and a LIST more. That is safe across processes:
        # anyone turning a remembered folder into an object (or the reverse) is refused by their own check, which
        # sees what is there; only a delete followed by a reuse elsewhere could slip by, and deletes forget here.
        validate_key(key)
        parts = key.split("/")
        parents = ["/".join(parts[:n]) for n in range(1, len(parts))]
        if key in self._known_objects and all(p in self._known_folders for p in parents):
            return
        for parent in parents:
            if parent not in self._known_folders and self.exists(parent):
                raise tree_conflict(self.uri, key, parent)
        below = self._name(key) + "/"

        def first() -> bool:  # one LIST page, not the whole folder
            return any(True for _ in self.client.list_objects(self.bucket, prefix=below, recursive=False))

        try:
            below_key = self._call("listing", key, first)
        except NotFound:  # no bucket yet: an empty tree
            return
        if below_key:
            raise tree_conflict(self.uri, key, key + "/…")
        self._remember(key, parents)

    def _remember(self, key: str, parents: list[str]) -> None:
        with self._lock:
            if len(self._known_objects) > 100_000:  # bounded: a long-lived server forgets and asks again
                self._known_objects.clear()
                self._known_folders.clear()
            self._known_objects.add(key)
            self._known_folders.update(parents)

    def _forget(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._known_objects.discard(key)
            self._known_folders.clear()  # a delete may empty any folder above it

    def _put_if_absent(self, key: str, name: str, data: bytes, content_type: str, sha: str) -> None:
        headers: _Headers = {"Content-Type": content_type, SHA_META: sha}
        if self._conditional_supported():
            headers["If-None-Match"] = "*"
        elif self.exists(key):  # the fallback: a window between this HEAD and the PUT
            raise AlreadyExists(f"{self.key_uri(key)} already exists")
        # put_object cannot send If-None-Match (minio 7.2 turns unknown headers into user metadata), so this
        # uses the SDK's own single-request PUT underneath it.
        try:
            self._write_call("writing", key, lambda: self.client._put_object(self.bucket, name, data, headers=headers))
        except AlreadyExists:
            # A retry after a PUT whose answer was lost meets our own object: that is success, not a rival.
            # (Manifests and claims carry a time and an operation id, so another writer's never hash the same.)
            try:
                ours = self.stat(key).sha256 == sha
            except NotFound:  # the rival's object is already gone again (a released claim): still refused
                ours = False
            if not ours:
                raise

    def _conditional_supported(self) -> bool:
        """Whether the server refuses a second `If-None-Match: *` PUT of one key (asked once per endpoint and
        bucket in a process: services open a store object per request URI)."""
        if self._conditional is None:
            self._conditional = _CONDITIONAL.get((self.endpoint, self.bucket))
        if self._conditional is None:
            probe = f"{STAGING}/probe-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
            name = self._name(probe)
            headers: _Headers = {"If-None-Match": "*", SHA_META: hashlib.sha256(b"").hexdigest()}
            put = lambda: self.client._put_object(self.bucket, name, b"", headers=headers)  # noqa: E731
            self._write_call("probing conditional writes at", probe, put)
            try:
                self._write_call("probing conditional writes at", probe, put)
                self._conditional = False
                log.warning(
                    "S3 endpoint %s ignores If-None-Match: exclusive creates fall back to HEAD-then-PUT "
                    "(two replicas racing for one id could both commit)",
                    self.endpoint,
                )
            except AlreadyExists:
                self._conditional = True
            finally:
                self._call("deleting", probe, lambda: self.client.remove_object(self.bucket, name))
            _CONDITIONAL[(self.endpoint, self.bucket)] = self._conditional
        return self._conditional

    def move(self, src: str, dst: str) -> None:
        source, dest = self._name(src), self._name(dst)
        # COPY keeps the user metadata, the recorded sha256 included; objects above 5 GiB would need a
        # multipart copy (compose_object), which smf's artifacts (wav, checkpoints) do not reach.
        self._write_call(
            "copying", src, lambda: self.client.copy_object(self.bucket, dest, CopySource(self.bucket, source))
        )
        self._call("deleting", src, lambda: self.client.remove_object(self.bucket, source))

    # --- reads ------------------------------------------------------------------------------------------------
    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        name = self._name(key)
        return self._iter(key, name, chunk_size)

    def _iter(self, key: str, name: str, chunk_size: int) -> Iterator[bytes]:
        h = hashlib.sha256()
        pos = 0
        response = self._call("reading", key, lambda: self.client.get_object(self.bucket, name))
        recorded = response.headers.get(SHA_META)
        etag = response.headers.get("etag")
        try:
            if not recorded:
                raise DataCorruption(f"{self.key_uri(key)}: no sha256 recorded (not written through the store)")
            while True:
                try:
                    for chunk in response.stream(chunk_size):
                        h.update(chunk)
                        pos += len(chunk)
                        yield chunk
                    break
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    if not isinstance(self._translate(exc, key), _Transient):
                        raise
                    # The connection broke mid-object: resume at `pos`, pinned to the same object version.
                    _close(response)
                    response = self._call(
                        "resuming a read of",
                        key,
                        functools.partial(  # bound now: `pos` moves on as the next chunks arrive
                            self.client.get_object,
                            self.bucket,
                            name,
                            offset=pos,
                            request_headers={"If-Match": etag} if etag else None,
                        ),
                    )
        finally:
            _close(response)
        if h.hexdigest() != recorded:
            raise corruption(self.key_uri(key), recorded, h.hexdigest())

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        st = self._call("reading metadata of", key, lambda: self.client.stat_object(self.bucket, name))
        sha = (st.metadata or {}).get(SHA_META, "")
        modified = st.last_modified.timestamp() if st.last_modified else 0.0
        return ObjectInfo(key, int(st.size or 0), sha, modified)

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        full = "/".join(p for p in (self.prefix, prefix) if p)
        full = full + "/" if full else ""
        try:
            names = self._call(
                "listing",
                prefix or None,
                lambda: [
                    o.object_name
                    for o in self.client.list_objects(self.bucket, prefix=full or None, recursive=True)
                    if not o.is_dir
                ],
            )
        except NotFound:  # no bucket (reads don't create it): nothing in it
            return []
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = (n[strip:] for n in names if n)
        return sorted(k for k in keys if prefix or not hidden(k))

    # --- deletes ----------------------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        self.stat(key)  # S3 deletes of missing objects succeed silently; the contract says NotFound
        name = self._name(key)
        self._forget([key])
        self._call("deleting", key, lambda: self.client.remove_object(self.bucket, name))

    def delete_prefix(self, prefix: str) -> None:
        prefix = validate_prefix(prefix)
        if not prefix:
            raise InvalidArgument("prefix", "must not be empty (refusing to delete the whole store)")
        keys = self.list(prefix)
        names = [self._name(k) for k in keys]
        self._forget(keys)

        def remove() -> None:
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(n) for n in names)))
            if errors:
                raise FailedPrecondition(
                    f"S3 endpoint {self.endpoint} could not delete {len(errors)} objects "
                    f"under {self.uri}/{prefix}: {errors[0].code} {errors[0].name}"
                )

        if names:
            self._call("deleting", prefix, remove)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        if not 1 <= int(expires_s) <= 7 * 24 * 3600:
            raise InvalidArgument("expires_s", f"must be 1 s .. 7 days (S3 limit), got {expires_s}")
        self.stat(key)  # NotFound now rather than a dead link later
        name = self._name(key)
        return self._call(
            "signing a URL for",
            key,
            lambda: self.client.presigned_get_object(self.bucket, name, expires=timedelta(seconds=int(expires_s))),
        )


def _parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """'host:port' or 'http(s)://host:port' -> ('host:port', secure)."""
    e = endpoint.strip().rstrip("/")
    secure = e.startswith("https://")
    for scheme in ("http://", "https://"):
        e = e.removeprefix(scheme)
    if not e or "/" in e:
        raise InvalidArgument("SMF_S3_ENDPOINT", f"{endpoint!r}: expected host:port or http(s)://host:port")
    return e, secure


def _short(exc: BaseException) -> str:
    """A one-line reason: urllib3 wraps the interesting error (e.g. connection refused) a few levels deep."""
    inner = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
    text = str(inner or exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"


def _close(response) -> None:
    with contextlib.suppress(Exception):  # best effort on an already broken connection
        response.close()
        response.release_conn()
