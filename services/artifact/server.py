"""ArtifactService: the artifact store over gRPC, for clients that have a token but no store credentials.

    smf serve artifact --store s3://smf/store --port 50055

Downloads stream in chunks below 1 MiB and end with the sha256 of what was sent; uploads are spooled to a temp
file, checked against the sha256 the client announced, and only then written to the store (atomically), so a
broken or mismatched upload leaves nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import tempfile

from google.protobuf.timestamp_pb2 import Timestamp
from smf.common import store as store_mod
from smf.common.errors import AlreadyExists, InvalidArgument
from smf.common.server import add_server_arguments, run_server, server_options
from smf.common.v1 import artifact_pb2, artifact_pb2_grpc

MAX_CHUNK = 512 << 10  # well below the 1 MiB per-message budget of the API
DEFAULT_PAGE = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _info(store, key: str) -> artifact_pb2.ObjectInfo:
    meta = store.stat(key)
    ts = Timestamp()
    ts.FromNanoseconds(int(meta.modified * 1e9))
    return artifact_pb2.ObjectInfo(
        key=meta.key, size=meta.size, sha256=meta.sha256, modify_time=ts, uri=store.key_uri(key)
    )


class ArtifactServicer(artifact_pb2_grpc.ArtifactServiceServicer):
    """smf.common.v1.ArtifactService over one store. Store calls block, so they run in worker threads."""

    def __init__(self, store):
        self.store = store

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
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgument("header", "the first UploadArtifact message must be the header (key, sha256)")
        header = first.header
        key = store_mod.validate_key(header.key)
        expected = header.sha256.lower()
        if not _SHA256.fullmatch(expected):
            raise InvalidArgument("sha256", f"must be 64 hex digits, got {header.sha256!r}")
        if header.size < 0:
            raise InvalidArgument("size", f"must be >= 0, got {header.size}")
        if not header.overwrite and await asyncio.to_thread(self.store.exists, key):
            raise AlreadyExists(f"{self.store.key_uri(key)} exists (set overwrite to replace it)")

        fd, tmp = tempfile.mkstemp(prefix="smf-upload-")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as f:
                async for message in request_iterator:
                    if message.WhichOneof("payload") != "data":
                        raise InvalidArgument("header", "only the first message may be a header")
                    digest.update(message.data)
                    size += len(message.data)
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


def main(argv: list[str] | None = None) -> int:
    """`smf serve artifact`: serve ArtifactService over the store given by --store (default $SMF_STORE)."""
    parser = argparse.ArgumentParser(prog="smf serve artifact", description=__doc__.splitlines()[0])
    add_server_arguments(parser, default_port=50055)
    args = parser.parse_args(argv)
    store = store_mod.open_store(args.store)
    run_server(
        name="artifact",
        servicers=[(artifact_pb2_grpc.add_ArtifactServiceServicer_to_server, ArtifactServicer(store))],
        service_names=[artifact_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name],
        **server_options(args),
    )
    return 0
