"""The commit protocol of artifacts: an operation stages its files, and the artifact appears only when its manifest
is committed, listing exactly the files this operation wrote (ARCHITECTURE §7).

    with Staging(store, refs.artifact_id(request.output_id, "renders", field="output_id")) as out:  # claims the id
        out.put_bytes("0.wav", wav)                   # -> .staging/<op>/0.wav, invisible to readers and `ls`
        out.put_bytes("0.pt", latent)
        manifest = out.commit("renders", config=..., inputs=["gan/run1"], service="gan")

Leaving the `with` by an exception (cancel, deadline, a failed write) removes the staged files and the claim: nothing
becomes visible. A crash leaves `.staging/<op>/` and the claim behind; `sweep` removes both once they are older than
SMF_STAGING_MAX_AGE_S (default 6 h): `start_sweeper` runs it in a server, `smf store sweep` by hand.
A crash in the middle of step (3) leaves moved files without a manifest under `<id>/`: invisible to readers, and
replaced or ignored by the next commit of that id (not swept: the folder may hold other artifacts).

Commit, in order: (1) the id is claimed for the whole operation (an exclusive create of `.staging/claims/<hash>`, so
a second writer of the same id, in this process or another replica, is refused at once); (2) if the id is already
committed it is ALREADY_EXISTS unless `overwrite` (then its manifest goes first, so it vanishes as a whole); (3) each
staged file is moved to `<id>/<name>` (a rename on file stores, server-side copy on S3), replacing a stale file of
that name; (4) the manifest is written with an exclusive create (`If-None-Match: *` on S3) — the commit point —
listing exactly the staged files, so a file already under `<id>/` (another artifact nested there, a leftover) is
never taken in; (5) the replaced version's files the new one lacks are deleted. Readers go by manifests
(`lineage.read_manifest`, `list_artifacts`), so an id without one does not exist for them.

Kinds own their prefixes: a name a request gives (`output_id`) is a name inside its kind's prefix, turned into an id
by `refs.artifact_id` (the one resolver); `gan/x`, `samples/y/z` or `..` never reach another kind's artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from smf.common.errors import AlreadyExists, DataCorruption, FailedPrecondition, InvalidArgument, NotFound
from smf.common.lineage import MANIFEST, Manifest, build_manifest, check_file_name, new_id, read_manifest
from smf.common.store import STAGING, Store, validate_prefix

__all__ = [
    "CLAIMS",
    "Claim",
    "Staging",
    "max_age_s",
    "start_sweeper",
    "sweep",
]

log = logging.getLogger("smf.commit")

CLAIMS = f"{STAGING}/claims"
DEFAULT_MAX_AGE_S = 6 * 3600.0
MOVERS = 8  # parallel moves at commit: S3 copies are one round trip each


# --- claims -----------------------------------------------------------------------------------------------------------
class Claim:
    """An exclusive hold on an artifact id (or a run name) for one operation, across processes and replicas.

    The claim is an object created with `if_absent`, so the store decides who holds it. `refresh()` keeps a long
    operation's claim from being swept as stale; `release()` removes it if it is still ours.
    """

    def __init__(self, store: Store, name: str, op: str, *, what: str = "artifact"):
        self.store, self.name, self.op, self.what = store, name, op, what
        self.key = f"{CLAIMS}/{hashlib.sha256(name.encode()).hexdigest()[:32]}"

    def _record(self) -> bytes:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps({"name": self.name, "op": self.op, "pid": os.getpid(), "at": now}).encode()

    def acquire(self) -> Claim:
        try:
            self.store.put_bytes(self.key, self._record(), content_type="application/json", if_absent=True)
        except AlreadyExists:
            holder = self.holder()
            raise AlreadyExists(
                f"{self.what} {self.name!r} is being written by another operation ({holder.get('op', '?')} since "
                f"{holder.get('at', '?')}); wait for it, or if it died, its claim is swept after "
                f"{max_age_s():g} s (smf store sweep)"
            ) from None
        return self

    def holder(self) -> dict:
        try:
            return json.loads(self.store.get_bytes(self.key))
        except (NotFound, ValueError):
            return {}

    def refresh(self) -> None:
        self.store.put_bytes(self.key, self._record(), content_type="application/json")

    def release(self) -> None:
        if self.holder().get("op") == self.op:  # not another's claim, taken after ours was swept
            try:
                self.store.delete(self.key)
            except NotFound:
                pass


# --- staging ----------------------------------------------------------------------------------------------------------
class Staging:
    """The files one operation writes for one artifact, invisible until `commit` (see the module docstring)."""

    def __init__(self, store: Store, artifact_id: str, *, overwrite: bool = False):
        try:
            self.id = validate_prefix(artifact_id)
        except InvalidArgument as exc:
            raise InvalidArgument("artifact_id", exc.message.split(": ", 1)[1]) from None
        if not self.id or self.id.split("/")[0] == STAGING:
            raise InvalidArgument("artifact_id", f"{artifact_id!r} is not an artifact id (kind/name)")
        self.store, self.overwrite = store, overwrite
        self.op = new_id()
        self.root = f"{STAGING}/{self.op}"
        self.files: dict[str, str] = {}  # name -> sha256, exactly what this operation wrote
        self._folders: set[str] = set()  # every folder those names imply (the tree rule, in O(depth))
        self._lock = threading.Lock()  # writers may stage from several threads (grid cells)
        self._moved: list[str] = []  # names published by a commit in progress
        self.done = False
        self._check_id()
        self._claim = Claim(store, self.id, self.op).acquire()

    def _check_id(self) -> None:
        if not self.overwrite and self.committed():
            raise AlreadyExists(f"artifact {self.id!r} already exists in {self.store.uri}; pick another name")
        self.store.check_tree(f"{self.id}/{MANIFEST}")  # no object where one of the id's folders must go

    def committed(self) -> bool:
        return self.store.exists(f"{self.id}/{MANIFEST}")

    # --- writes -------------------------------------------------------------------------------------------------------
    def _name(self, name: str) -> str:
        check_file_name(name, "the commit")
        if self.done:
            raise FailedPrecondition(f"artifact {self.id!r}: this operation has already committed or aborted")
        # the tree rule among this operation's own files (the store does not check staged keys)
        parts = name.split("/")
        parents = ["/".join(parts[:n]) for n in range(1, len(parts))]
        with self._lock:
            clash = name if name in self._folders else next((p for p in parents if p in self.files), None)
            if clash is not None:
                raise FailedPrecondition(
                    f"artifact {self.id!r}: {name!r} and {clash!r} cannot both be files of it "
                    "(a name is a file or a folder, never both)"
                )
            self._folders.update(parents)
        return name

    def _staged(self, name: str, sha: str) -> str:
        with self._lock:
            self.files[name] = sha
        return sha

    def put_bytes(self, name: str, data: bytes, *, content_type: str | None = None) -> str:
        key = f"{self.root}/{self._name(name)}"
        return self._staged(name, self.store.put_bytes(key, data, content_type=content_type))

    def put_file(self, name: str, path: str | os.PathLike, *, content_type: str | None = None) -> str:
        key = f"{self.root}/{self._name(name)}"
        return self._staged(name, self.store.put_file(key, path, content_type=content_type))

    def key(self, name: str) -> str:
        """The key `name` will have once committed."""
        return f"{self.id}/{name}"

    def key_uri(self, name: str) -> str:
        return self.store.key_uri(self.key(name))

    # --- commit / abort -----------------------------------------------------------------------------------------------
    def commit(self, kind: str, *, config: Any = None, inputs=(), service: str = "smf") -> Manifest:
        """Publish the staged files under the id, manifest last; returns the manifest."""
        manifest, text = build_manifest(kind, self.id, self.files, config, inputs, service)
        if self.done:
            raise FailedPrecondition(f"artifact {self.id!r}: this operation has already committed or aborted")
        try:
            old = existing(self.store, self.id)
            if old is not None:
                if not self.overwrite:
                    raise AlreadyExists(f"artifact {self.id!r} already exists in {self.store.uri}")
                self.store.delete(f"{self.id}/{MANIFEST}")  # the old artifact vanishes at once, as a whole
            self._move_all()
            self.store.put_bytes(
                f"{self.id}/{MANIFEST}", text.encode(), content_type="application/json", if_absent=True
            )
        except BaseException:
            self._unpublish()
            self.abort()
            raise
        self.done = True
        # Files of the replaced version that this one lacks. Only those: an artifact's folder may hold other
        # artifacts and files (pipelines/<name>/ holds state.json and corners/), so the folder is never wiped.
        for name in sorted(set(old.files) - set(self.files)) if old is not None else ():
            try:
                self.store.delete(self.key(name))
            except NotFound:
                pass
        self._cleanup()
        return manifest

    def _move_all(self) -> None:
        names = sorted(self.files)
        if len(names) <= MOVERS:
            for name in names:
                self._move(name)
            return
        with ThreadPoolExecutor(max_workers=MOVERS, thread_name_prefix="commit-move") as pool:
            for future in [pool.submit(self._move, name) for name in names]:
                future.result()

    def _unpublish(self) -> None:
        """A commit that failed before its manifest: take back the files it had moved (best effort)."""
        for name in list(self._moved):
            try:
                self.store.delete(self.key(name))
            except Exception:  # invisible without a manifest anyway
                pass

    def _move(self, name: str) -> None:
        self.store.move(f"{self.root}/{name}", self.key(name))
        with self._lock:
            self._moved.append(name)
        # What is published must be what this operation wrote: anyone with write access to the store could have
        # replaced a staged object meanwhile, and the manifest is about to vouch for it.
        if self.store.stat(self.key(name)).sha256 != self.files[name]:
            raise DataCorruption(
                f"artifact {self.id!r}: staged file {name!r} changed before the commit (not what this operation "
                "wrote); nothing was committed"
            )

    def abort(self) -> None:
        """Drop what this operation staged (nothing of it becomes visible); safe to call twice."""
        self.done = True
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self.store.list(self.root):
                self.store.delete_prefix(self.root)
        except Exception:  # best effort: the sweeper removes what is left
            log.exception("could not remove %s", self.root)
        try:
            self._claim.release()
        except Exception:
            log.exception("could not release the claim on %s", self.id)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()  # an exception, or a `with` left without commit: nothing becomes visible


def existing(store: Store, artifact: str) -> Manifest | None:
    """The manifest of `artifact` if it is committed, else None."""
    try:
        return read_manifest(store, artifact)
    except NotFound:
        return None


# --- sweeper ----------------------------------------------------------------------------------------------------------
def max_age_s() -> float:
    """How old staging and claims may get before the sweeper removes them: $SMF_STAGING_MAX_AGE_S or 6 h."""
    raw = os.environ.get("SMF_STAGING_MAX_AGE_S", "")
    try:
        value = float(raw) if raw else DEFAULT_MAX_AGE_S
    except ValueError:
        raise InvalidArgument("SMF_STAGING_MAX_AGE_S", f"must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise InvalidArgument("SMF_STAGING_MAX_AGE_S", f"must be >= 0, got {raw!r}")
    return value


def _op_started(op: str) -> float | None:
    """The start time an operation id carries (`new_id`: 20261125-203000-ab12cd), or None."""
    try:
        return datetime.strptime(op[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def sweep(store: Store, max_age: float | None = None, *, now: float | None = None) -> list[str]:
    """Remove staging of operations, and claims, older than `max_age` s; returns what was removed."""
    max_age = max_age_s() if max_age is None else max_age
    now = time.time() if now is None else now
    removed = []
    ops: set[str] = set()
    for key in store.list(STAGING):
        parts = key.split("/")
        if key.startswith(CLAIMS + "/"):
            try:
                if now - store.stat(key).modified > max_age:
                    store.delete(key)
                    removed.append(key)
            except NotFound:  # released meanwhile
                pass
        elif len(parts) > 2:
            ops.add(parts[1])
        elif now - store.stat(key).modified > max_age:  # a loose object (a probe left by a crash)
            store.delete(key)
            removed.append(key)
    for op in sorted(ops):
        started = _op_started(op)
        if started is None or now - started > max_age:
            store.delete_prefix(f"{STAGING}/{op}")
            removed.append(f"{STAGING}/{op}")
    return removed


def start_sweeper(store: Store, *, every_s: float = 600.0) -> threading.Thread:
    """Sweep now and then every `every_s` s in a daemon thread (servers call this at start)."""

    def loop() -> None:
        while True:
            try:
                removed = sweep(store)
                if removed:
                    log.info("swept %d stale staging entries from %s", len(removed), store.uri)
            except Exception:  # an unreachable store now is not a reason to stop sweeping later
                log.warning("sweeping %s failed", store.uri, exc_info=True)
            time.sleep(every_s)

    thread = threading.Thread(target=loop, name="smf-sweeper", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    """`python -m smf.common.commit [STORE] [--older-than S]`: sweep stale staging and claims now."""
    import argparse

    from smf.common.store import open_store

    parser = argparse.ArgumentParser(prog="python -m smf.common.commit", description=main.__doc__)
    parser.add_argument("store", nargs="?", default=None, help="store URI (default $SMF_STORE)")
    parser.add_argument("--older-than", type=float, default=None, help="seconds (default $SMF_STAGING_MAX_AGE_S)")
    args = parser.parse_args(argv)
    for entry in sweep(open_store(args.store), args.older_than):
        print(entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
