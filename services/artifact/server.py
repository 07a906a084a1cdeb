"""ArtifactService: the artifact store over gRPC, for clients that have a token but no store credentials.

    smf serve artifact --store s3://smf/store --port 50055

Downloads stream in chunks below 1 MiB and end with the sha256 of what was sent; uploads are spooled to a temp
file, checked against the sha256 the client announced, and only then written to the store (atomically), so a
broken or mismatched upload leaves nothing behind. An upload is bounded while it streams: past the server's size
limit (`--max-upload-bytes`) or the size it announced it is refused at once, and a stream that sends nothing for
`--upload-idle-timeout` seconds is closed with DEADLINE_EXCEEDED; the spool file goes in every case.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import tempfile

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from smf.common import store as store_mod
from smf.common.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from smf.common.server import add_server_arguments, run_server, server_options
from smf.common.v1 import artifact_pb2, artifact_pb2_grpc

MAX_CHUNK = 512 << 10  # well below the 1 MiB per-message budget of the API
DEFAULT_PAGE = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_UPLOAD_BYTES = 1 << 30  # default of --max-upload-bytes: checkpoints and exports are far smaller
UPLOAD_IDLE_S = 30.0  # default of --upload-idle-timeout: a live client sends a chunk far more often than this


def _info(store, key: str) -> artifact_pb2.ObjectInfo:
    meta = store.stat(key)
    ts = Timestamp()
    ts.FromNanoseconds(int(meta.modified * 1e9))
    return artifact_pb2.ObjectInfo(
        key=meta.key, size=meta.size, sha256=meta.sha256, modify_time=ts, uri=store.key_uri(key)
    )


class ArtifactServicer(artifact_pb2_grpc.ArtifactServiceServicer):
    """smf.common.v1.ArtifactService over one store. Store calls block, so they run in worker threads."""

    def __init__(
        self,
        store,
        *,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        upload_idle_s: float = UPLOAD_IDLE_S,
        spool_dir: str | None = None,
    ):
        if max_upload_bytes < 1:
            raise InvalidArgument("max_upload_bytes", f"must be >= 1, got {max_upload_bytes}")
        if not upload_idle_s > 0:
            raise InvalidArgument("upload_idle_s", f"must be > 0, got {upload_idle_s}")
        self.store = store
        self.max_upload_bytes, self.upload_idle_s, self.spool_dir = max_upload_bytes, upload_idle_s, spool_dir

    async def ListArtifacts(self, request, context):
        prefix = store_mod.validate_prefix(request.prefix)
        if request.page_size < 0:
            raise InvalidArgument("page_size", f"must be >= 0, got {request.page_size}")
        size = request.page_size or DEFAULT_PAGE
        keys = await asyncio.to_thread(self.store.list, prefix)
        # the token is the last key of the previous page: keys are sorted, so paging survives new writes
        if request.page_token:
            keys = [k for k in keys if k > request.page_token]
        page = keys[:size]
        more = len(keys) > size
        return artifact_pb2.ListArtifactsResponse(keys=page, next_page_token=page[-1] if more else "")

    async def StatArtifact(self, request, context):
        key = store_mod.validate_key(request.key)
        return artifact_pb2.StatArtifactResponse(info=await asyncio.to_thread(_info, self.store, key))

    async def DownloadArtifact(self, request, context):
        key = store_mod.validate_key(request.key)
        if not 0 <= request.chunk_size <= MAX_CHUNK:
            raise InvalidArgument(
                "chunk_size", f"must be 1..{MAX_CHUNK} (or 0 for the default), got {request.chunk_size}"
            )
        chunk_size = request.chunk_size or MAX_CHUNK
        meta = await asyncio.to_thread(self.store.stat, key)  # NotFound before any byte is sent
        await context.send_initial_metadata((("x-smf-sha256", meta.sha256), ("x-smf-size", str(meta.size))))
        chunks = await asyncio.to_thread(self.store.iter_chunks, key, chunk_size)
        digest, offset, done = hashlib.sha256(), 0, object()
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            # a backend may hand back bigger pieces than asked; never send a message above chunk_size
            for start in range(0, len(chunk), chunk_size):
                piece = chunk[start : start + chunk_size]
                digest.update(piece)
                yield artifact_pb2.DownloadArtifactResponse(data=piece, offset=offset)
                offset += len(piece)
        # iter_chunks verified the stored sha256 when it ended; this one covers what actually went out
        yield artifact_pb2.DownloadArtifactResponse(offset=offset, last=True, sha256=digest.hexdigest())

    async def UploadArtifact(self, request_iterator, context):
        messages = aiter(request_iterator)
        first = await self._next_upload_message(messages, context, 0)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgument("header", "the first UploadArtifact message must be the header (key, sha256)")
        header = first.header
        key = store_mod.validate_client_key(header.key)
        expected = header.sha256.lower()
        if not _SHA256.fullmatch(expected):
            raise InvalidArgument("sha256", f"must be 64 hex digits, got {header.sha256!r}")
        if header.size < 0:
            raise InvalidArgument("size", f"must be >= 0, got {header.size}")
        if header.size > self.max_upload_bytes:
            raise ResourceExhausted(self._too_big(f"size: {header.size} bytes announced"))
        if not header.overwrite and await asyncio.to_thread(self.store.exists, key):
            raise AlreadyExists(f"{self.store.key_uri(key)} exists (set overwrite to replace it)")

        fd, tmp = tempfile.mkstemp(prefix="smf-upload-", dir=self.spool_dir)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as f:
                while (message := await self._next_upload_message(messages, context, size)) is not None:
                    if message.WhichOneof("payload") != "data":
                        raise InvalidArgument("header", "only the first message may be a header")
                    size += len(message.data)
                    # checked before the bytes are spooled: a client never makes the server hold more than it may
                    if header.size and size > header.size:
                        raise InvalidArgument(
                            "size", f"announced {header.size} bytes, received more ({size} so far); nothing stored"
                        )
                    if size > self.max_upload_bytes:
                        raise ResourceExhausted(self._too_big(f"{size} bytes received so far"))
                    digest.update(message.data)
                    f.write(message.data)
            if header.size and size != header.size:
                raise InvalidArgument("size", f"announced {header.size} bytes, received {size}; nothing stored")
            if digest.hexdigest() != expected:
                raise InvalidArgument(
                    "sha256", f"announced {expected}, received data hashes to {digest.hexdigest()}; nothing stored"
                )
            await asyncio.to_thread(self.store.put_file, key, tmp, content_type=header.content_type or None)
        finally:
            os.unlink(tmp)
        return artifact_pb2.UploadArtifactResponse(info=await asyncio.to_thread(_info, self.store, key))

    async def _next_upload_message(self, messages, context, received: int):
        """The next request message (None at the end), or DEADLINE_EXCEEDED when none comes within the idle time."""
        try:
            return await asyncio.wait_for(anext(messages, None), self.upload_idle_s)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"upload idle: nothing received for {self.upload_idle_s:g} s after {received} bytes "
                "(--upload-idle-timeout); nothing stored, send the whole upload again",
            )

    def _too_big(self, what: str) -> str:
        return (
            f"{what}, above this server's upload limit of {self.max_upload_bytes} bytes (--max-upload-bytes, "
            "$SMF_MAX_UPLOAD_BYTES); nothing stored"
        )


def main(argv: list[str] | None = None) -> int:
    """`smf serve artifact`: serve ArtifactService over the store given by --store (default $SMF_STORE)."""
    parser = argparse.ArgumentParser(prog="smf serve artifact", description=__doc__.splitlines()[0])
    add_server_arguments(parser, default_port=50055)
    parser.add_argument(
        "--max-upload-bytes",
        type=int,
        default=os.environ.get("SMF_MAX_UPLOAD_BYTES") or MAX_UPLOAD_BYTES,  # argparse applies type= to a str
        metavar="N",
        help=f"largest upload accepted (default $SMF_MAX_UPLOAD_BYTES or {MAX_UPLOAD_BYTES}); refused while streaming",
    )
    parser.add_argument(
        "--upload-idle-timeout",
        type=float,
        default=os.environ.get("SMF_UPLOAD_IDLE_S") or UPLOAD_IDLE_S,
        metavar="S",
        help=f"close an upload that sends nothing for S seconds (default $SMF_UPLOAD_IDLE_S or {UPLOAD_IDLE_S:g})",
    )
    args = parser.parse_args(argv)
    store = store_mod.open_store(args.store)
    servicer = ArtifactServicer(store, max_upload_bytes=args.max_upload_bytes, upload_idle_s=args.upload_idle_timeout)
    run_server(
        name="artifact",
        servicers=[(artifact_pb2_grpc.add_ArtifactServiceServicer_to_server, servicer)],
        service_names=[artifact_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name],
        **server_options(args),
    )
    return 0
