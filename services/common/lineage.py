"""Artifact manifests: what an artifact is, who made it from what, and the sha256 of each of its files.

An artifact is a key prefix in the store (`gan/<run>`, `samples/<id>`, `grids/<id>` …) holding its files and a
`manifest.json`, written last — the manifest is the commit point: an artifact without one does not exist.
`write_artifact` goes through the commit protocol (`smf.common.commit`: staged, then published manifest last).

    aid = "samples/" + new_id()
    write_artifact(store, "samples", aid, {"0.wav": wav, "0.pt": latent_path}, config={"n": 1},
                   inputs=["gan/run1"], service="gan")
    read_manifest(store, aid).files          # {"0.pt": "<sha256>", "0.wav": "<sha256>"}
    verify_artifact(store, aid)              # re-reads every file; DataCorruption names the first bad one

Files written along the way by a run that owns its prefix (a trainer's checkpoints) are committed with
`commit_artifact`, which records whatever is under the prefix; every other writer stages (`commit.Staging`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smf import __version__
from smf.common.errors import DataCorruption, InvalidArgument, NotFound
from smf.common.store import Store, validate_key, validate_prefix

__all__ = [
    "MANIFEST",
    "Manifest",
    "build_manifest",
    "commit_artifact",
    "created_by",
    "list_artifacts",
    "new_id",
    "read_json_file",
    "read_manifest",
    "verify_artifact",
    "write_artifact",
]

MANIFEST = "manifest.json"


@dataclass
class Manifest:
    """The contents of `<artifact>/manifest.json` (ARCHITECTURE §3). `files` maps names relative to the
    artifact prefix to their sha256."""

    kind: str
    id: str
    created_at: str
    created_by: dict[str, str]
    config: Any = None
    inputs: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
            missing = [k for k in ("kind", "id", "created_at", "created_by", "files") if k not in data]
            if missing:
                raise ValueError(f"missing fields {missing}")
            return cls(
                kind=data["kind"],
                id=data["id"],
                created_at=data["created_at"],
                created_by=dict(data["created_by"]),
                config=data.get("config"),
                inputs=list(data.get("inputs") or []),
                files=dict(data["files"]),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise DataCorruption(f"{source}: not a valid smf manifest ({exc})") from None


def new_id(prefix: str = "") -> str:
    """A sortable unique id: UTC time to the second plus 6 random hex, e.g. `20261125-203000-ab12cd`.

    `prefix` is prepended verbatim: new_id("samples/") -> "samples/20261125-203000-ab12cd".
    """
    return prefix + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@functools.lru_cache(maxsize=1)
def _git_sha() -> str:
    if os.environ.get("SMF_GIT_SHA"):
        return os.environ["SMF_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # no git (container image): set SMF_GIT_SHA at build time instead
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def created_by(service: str = "smf") -> dict[str, str]:
    """The `created_by` block: which service, which smf version, which commit."""
    return {"service": service, "version": __version__, "git_sha": _git_sha()}


def _artifact_prefix(artifact_id: str) -> str:
    try:
        prefix = validate_prefix(artifact_id)
    except InvalidArgument as exc:
        raise InvalidArgument("artifact_id", exc.message.split(": ", 1)[1]) from None
    if not prefix:
        raise InvalidArgument("artifact_id", "must not be empty")
    return prefix


def check_file_name(name: str, writer: str = "write_artifact") -> str:
    """A file name inside an artifact: a valid relative key, not the manifest (`writer` writes that itself)."""
    try:
        validate_key(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"files[{name!r}]", exc.message.split(": ", 1)[1]) from None
    if name == MANIFEST:
        raise InvalidArgument(f"files[{name!r}]", f"{MANIFEST} is written by {writer} itself")
    return name


def write_artifact(
    store: Store,
    kind: str,
    artifact_id: str,
    files: dict[str, bytes | os.PathLike],
    *,
    config: Any = None,
    inputs=(),
    service: str = "smf",
    overwrite: bool = False,
) -> Manifest:
    """Write `files` under `artifact_id/`, then its manifest (the commit point). Values are bytes or local paths.

    All names and values are checked before anything is written, so a bad call leaves nothing behind; the files
    are staged and published together (`commit.Staging`). A committed `artifact_id` is AlreadyExists unless
    `overwrite`.
    """
    from smf.common.commit import Staging  # commit builds on this module's manifests

    prefix = _artifact_prefix(artifact_id)
    for name, value in files.items():
        check_file_name(name)
        if isinstance(value, str):
            raise InvalidArgument(
                f"files[{name!r}]", "got a str: pass bytes for contents or a pathlib.Path for a local file"
            )
        if not isinstance(value, (bytes, bytearray, memoryview, os.PathLike)):
            raise InvalidArgument(f"files[{name!r}]", f"expected bytes or a path, got {type(value).__name__}")
        if isinstance(value, os.PathLike) and not Path(value).is_file():
            raise InvalidArgument(f"files[{name!r}]", f"{os.fspath(value)} is not a readable file")
    build_manifest(kind, prefix, {}, config, inputs, service)  # a bad kind, config or inputs: before any write
    with Staging(store, prefix, overwrite=overwrite) as out:
        for name, value in files.items():
            if isinstance(value, os.PathLike):
                out.put_file(name, value)
            else:
                out.put_bytes(name, bytes(value))
        return out.commit(kind, config=config, inputs=inputs, service=service)


def commit_artifact(
    store: Store, kind: str, artifact_id: str, *, config: Any = None, inputs=(), service: str = "smf"
) -> Manifest:
    """Write the manifest of an artifact whose files are already in the store (e.g. checkpoints written during
    training): every object under the prefix is listed with the sha256 recorded when it was written."""
    prefix = _artifact_prefix(artifact_id)
    shas = {}
    for key in store.list(prefix):
        name = key[len(prefix) + 1 :]
        if name != MANIFEST:
            shas[name] = store.stat(key).sha256
    return _write_manifest(store, kind, prefix, shas, config, inputs, service)


def _write_manifest(
    store: Store, kind: str, prefix: str, shas: dict[str, str], config: Any, inputs, service: str
) -> Manifest:
    manifest, text = build_manifest(kind, prefix, shas, config, inputs, service)
    store.put_bytes(f"{prefix}/{MANIFEST}", text.encode(), content_type="application/json")
    return manifest


def build_manifest(
    kind: str, prefix: str, shas: dict[str, str], config: Any, inputs, service: str
) -> tuple[Manifest, str]:
    """The manifest of an artifact and its JSON text; InvalidArgument for a bad kind, inputs or config."""
    if not kind or not isinstance(kind, str):
        raise InvalidArgument("kind", f"must be a non-empty string, got {kind!r}")
    inputs = list(inputs)
    if not all(isinstance(i, str) and i for i in inputs):
        raise InvalidArgument("inputs", f"must be artifact ids (strings), got {inputs!r}")
    manifest = Manifest(
        kind=kind,
        id=prefix,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        created_by=created_by(service),
        config=config,
        inputs=inputs,
        files=dict(sorted(shas.items())),
    )
    try:
        text = manifest.to_json()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("config", f"must be JSON-serialisable: {exc}") from None
    return manifest, text


def read_manifest(store: Store, artifact_id: str) -> Manifest:
    """The manifest of an artifact; NotFound if it has none (absent, or never committed)."""
    prefix = _artifact_prefix(artifact_id)
    key = f"{prefix}/{MANIFEST}"
    try:
        data = store.get_bytes(key)
    except NotFound:
        raise NotFound(f"artifact {prefix!r} not found in {store.uri} (no {MANIFEST})") from None
    return Manifest.from_json(data, source=store.key_uri(key))


def read_json_file(store: Store, artifact_id: str, name: str, *, what: str) -> tuple[Any, Manifest]:
    """A JSON file of a committed artifact, with the manifest (for its creation time, inputs ...).

        doc, manifest = read_json_file(store, "grids/g1", "grid.json", what="a grid")

    NotFound if the artifact has no manifest, or its manifest lists no `name` (then it is not `what`).
    """
    manifest = read_manifest(store, artifact_id)
    if name not in manifest.files:
        raise NotFound(f"{artifact_id} is a {manifest.kind!r} artifact without {name}, not {what}")
    return json.loads(store.get_bytes(f"{manifest.id}/{name}")), manifest


def verify_artifact(store: Store, artifact_id: str) -> None:
    """Re-read every file of the artifact and check it against the manifest; DataCorruption names the file."""
    manifest = read_manifest(store, artifact_id)
    for name, expected in manifest.files.items():
        key = f"{manifest.id}/{name}"
        h = hashlib.sha256()
        try:
            for chunk in store.iter_chunks(key):  # also checks the store's own recorded sha256
                h.update(chunk)
        except NotFound:
            raise DataCorruption(
                f"artifact {manifest.id!r}: file {name!r} is listed in the manifest but missing from {store.uri}"
            ) from None
        if h.hexdigest() != expected:
            raise DataCorruption(
                f"artifact {manifest.id!r}: file {name!r} has sha256 {h.hexdigest()[:16]}… but "
                f"the manifest records {expected[:16]}…"
            )


def list_artifacts(store: Store, prefix: str = "") -> list[str]:
    """Ids of the committed artifacts under `prefix` (e.g. "gan" -> ["gan/run1", "gan/run2"]), sorted."""
    suffix = "/" + MANIFEST
    return [k[: -len(suffix)] for k in store.list(prefix) if k.endswith(suffix)]
