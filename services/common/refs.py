"""References: what a request or a command names (`name`, `kind/name`, a store URI) turned into (store, id).

Every service and CLI resolves artifact names here, so they all agree on what a name means and where a store URI's
prefix ends:

    store, run = resolve(store, "run1", "gan", field="model")                      # (store, "gan/run1")
    store, run = resolve(store, store.key_uri("gan/run1"), "gan", field="model")   # the same run by its URI
    store, run = resolve(store, "s3://smf/team-a/gan/run1", "gan", field="--model", allowed=ANY)   # a CLI: any store
    store, key = resolve_key(store, "samples/20261125-203000-ab12cd/3.pt", field="latent_uris[0]")

The rules, one place:
- An artifact id is `<kind>/<name>`, exactly two key segments; a bare `name` means `<kind>/name`. `any_kind=True`
  accepts `<other kind>/<name>` as given (a bare name still means `<kind>/name`).
- A URI inside a store the caller knows (`store` itself and the stores in `allowed`) belongs to that store, the
  longest matching one. A URI in any other store is refused with PermissionDenied, without opening it, so the answer
  never says whether the thing exists there; `allowed=ANY` (commands run with the user's own rights) opens it.
- In another store (ANY only), an artifact id is the URI's last two segments: `s3://b/p/gan/run1` is `gan/run1` in
  `s3://b/p`. An object key has no fixed depth, so its store is the configured one ($SMF_STORE) when that is a
  prefix, else the s3 bucket root, or the folder holding a file store's `.smf-meta` (see `store.parse_uri`).
- A bad name is InvalidArgument naming `field`: empty, `.`/`..` segments, characters outside [A-Za-z0-9._-],
  the wrong kind, or more segments than an id has.

A server refuses anything outside its configured stores and data roots (`Confinement`: `--allow-store`,
`--data-root`; by default its own store and no local folder), before anything is opened:

    confine = Confinement.from_args(args)                            # or Confinement() in tests: own store only
    path = check_data(store, cfg.loader.data_path, field="loaderConfig.data_path", confine=confine)
    folder = local_folder("/srv/sounds/a", confine.data_roots, field="dataset.folder")   # resolved, or refused
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from smf.common.errors import InvalidArgument, PermissionDenied
from smf.common.store import Store, canonical_uri, default_store_uri, open_store, parse_uri, validate_key

__all__ = [
    "ANY",
    "Confinement",
    "add_confinement_arguments",
    "artifact_id",
    "check_data",
    "is_uri",
    "is_local_path",
    "local_folder",
    "resolve",
    "resolve_key",
]

SCHEMES = ("file://", "s3://")


class _AnyStore:
    """The `allowed` value of a caller that acts with the user's own rights: any store a URI names is opened."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _AnyStore()
Allowed = Sequence[Store | str] | _AnyStore | None


def is_uri(raw: object) -> TypeGuard[str]:
    """Whether `raw` is written as a URI (`scheme://…`) rather than a name, key or local path."""
    return isinstance(raw, str) and "://" in raw


def _reason(exc: InvalidArgument) -> str:
    """The message of an InvalidArgument without its field, to re-raise it under the caller's field."""
    return exc.message.split(": ", 1)[1] if ": " in exc.message else exc.message


def artifact_id(raw: str, kind: str, *, field: str, any_kind: bool = False) -> str:
    """'name', 'kind/name' (or 'kind/name/') -> 'kind/name', checked; no store involved.

    artifact_id("run1", "gan", field="model") == "gan/run1"
    """
    if not isinstance(raw, str) or not raw.strip("/"):
        raise InvalidArgument(field, f"name one: '{kind}/<name>', '<name>' or its store URI")
    name = raw.strip("/")
    if "/" not in name:
        name = f"{kind}/{name}"
    try:
        validate_key(name)
    except InvalidArgument as exc:
        raise InvalidArgument(field, _reason(exc)) from None
    first, _, rest = name.partition("/")
    if first != kind and not any_kind:
        raise InvalidArgument(field, f"{raw!r} names a {first} artifact; expected '{kind}/<name>' or '<name>'")
    if "/" in rest:
        raise InvalidArgument(field, f"{raw!r} is not an artifact id (expected '{first}/<name>' or '<name>')")
    return name


def resolve(
    store: Store | str | None,
    raw: str,
    kind: str,
    *,
    field: str,
    allowed: Allowed = None,
    any_kind: bool = False,
) -> tuple[Store, str]:
    """(store holding it, '<kind>/<name>') for a name, an id or an artifact URI.

    `allowed`: the stores a URI may point into besides `store` (None: `store` only; ANY: any store). `store` may be
    a URI, opened only when the answer lies in it; None means the configured store ($SMF_STORE).
    """
    if not is_uri(raw):
        aid = artifact_id(raw, kind, field=field, any_kind=any_kind)
        return _open(_home(store), None), aid
    uri = _normalise(raw, field)
    found = _known_store(store, allowed, uri)
    if found is not None:
        home, key = found
    elif allowed is ANY:
        home, key = _structural_split(uri, field, store)
    else:
        raise _outside(raw, store, allowed, field)
    return home, artifact_id(key, kind, field=field, any_kind=any_kind)


def resolve_key(store: Store | str | None, raw: str, *, field: str, allowed: Allowed = None) -> tuple[Store, str]:
    """(store holding it, key) for an object key or an object's URI (a latent, a config, a conditioning array).

    resolve_key(store, "samples/x/3.pt", field="latent") == (store, "samples/x/3.pt")
    """
    if not isinstance(raw, str) or not raw.strip("/"):
        raise InvalidArgument(field, "name an object: a store key or its URI")
    if not is_uri(raw):
        home, key = _open(_home(store), None), raw.rstrip("/")  # a leading '/' is refused: keys are relative
    else:
        uri = _normalise(raw, field)
        found = _known_store(store, allowed, uri)
        if found is not None:
            home, key = found
        elif allowed is ANY:
            try:
                store_uri, key = parse_uri(uri)
            except InvalidArgument as exc:
                raise InvalidArgument(field, _reason(exc)) from None
            home = _open(store_uri, store)
        else:
            raise _outside(raw, store, allowed, field)
    try:
        return home, validate_key(key)
    except InvalidArgument as exc:
        raise InvalidArgument(field, _reason(exc)) from None


# --- what a server may read: its stores and data roots -----------------------------------------------------------
@dataclass(frozen=True)
class Confinement:
    """The stores a server reads besides its own (`stores`, URIs) and the local folders it may train on
    (`data_roots`, resolved absolute paths). The default, `Confinement()`, is the server's own store and no folder."""

    stores: tuple[str, ...] = ()
    data_roots: tuple[Path, ...] = ()

    @classmethod
    def of(cls, stores: Sequence[str] = (), data_roots: Sequence[str | os.PathLike] = ()) -> Confinement:
        """Checked and canonical: store URIs as `Store.uri` spells them, roots absolute with symlinks resolved."""
        uris = tuple(canonical_uri(u) for u in stores)
        roots = []
        for r in data_roots:
            if not os.path.isabs(os.path.expanduser(str(r))):
                raise InvalidArgument("--data-root", f"{r!s} must be an absolute folder")
            roots.append(Path(os.path.expanduser(str(r))).resolve())
        return cls(uris, tuple(roots))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Confinement:
        """From the flags `add_confinement_arguments` adds; a flag not given falls back to its environment variable
        ($SMF_ALLOWED_STORES comma-separated, $SMF_DATA_ROOTS os.pathsep-separated)."""
        stores = args.allow_store
        if stores is None:
            stores = [u.strip() for u in os.environ.get("SMF_ALLOWED_STORES", "").split(",") if u.strip()]
        roots = args.data_root
        if roots is None:
            roots = [r.strip() for r in os.environ.get("SMF_DATA_ROOTS", "").split(os.pathsep) if r.strip()]
        return cls.of(stores, roots)


def add_confinement_arguments(parser: argparse.ArgumentParser) -> None:
    """`--allow-store URI` and `--data-root DIR` (repeatable; given, they replace $SMF_ALLOWED_STORES and
    $SMF_DATA_ROOTS): what a server may read besides its own store. Read them with `Confinement.from_args`."""
    parser.add_argument(
        "--allow-store",
        action="append",
        metavar="URI",
        help="another store whose URIs requests may name (repeatable; default $SMF_ALLOWED_STORES; "
        "without it: this server's own --store only)",
    )
    parser.add_argument(
        "--data-root",
        action="append",
        metavar="DIR",
        help="a local folder requests may train on, with everything under it (repeatable; default "
        "$SMF_DATA_ROOTS; without it: training data comes from the store only)",
    )


def is_local_path(raw: str) -> bool:
    """Whether training data written as `raw` means a folder on the local disk (as the trainers read it): an
    absolute path, `~`, or one starting with '.'; anything else that is not a URI is a store key or id."""
    return not is_uri(raw) and (os.path.isabs(raw) or raw.startswith((".", "~")))


def local_folder(raw: str, roots: Sequence[Path], *, field: str) -> Path:
    """The folder (or file) `raw` names, symlinks and '..' resolved, when it lies under one of `roots`; else
    PermissionDenied.

    The check uses the resolved path only (nothing is listed or opened), so the answer is the same whether or not
    the folder exists: a missing folder inside a root is the trainer's error to report.
    """
    path = Path(os.path.expanduser(raw)).resolve()  # a relative path is the trainer's: relative to this process
    if any(path.is_relative_to(root) for root in roots):
        return path
    where = ", ".join(str(r) for r in roots) or "none: this server trains on store data only (see --data-root)"
    raise PermissionDenied(f"{field}: {raw} is outside the data roots this service may read ({where})")


def check_data(store: Store, raw: str, *, field: str, confine: Confinement) -> str:
    """Training data a request names, checked before any job starts: a URI must lie in the server's stores, a local
    folder under its data roots (PermissionDenied otherwise, whether or not it exists); a store key passes as is.
    Returns `raw`, or for a local folder its resolved path."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidArgument(field, "name the training data: a store key or id, or its store URI")
    if is_uri(raw):
        resolve_key(store, raw, field=field, allowed=list(confine.stores))
        return raw
    if is_local_path(raw):
        return str(local_folder(raw, confine.data_roots, field=field))
    return raw


# --- helpers -----------------------------------------------------------------------------------------------------
def _normalise(raw: str, field: str) -> str:
    """The URI in the form `Store.uri` uses (file paths percent-quoted, no trailing '/'), or InvalidArgument.

    '.' and '..' are refused before anything is compared, so `file:///store/../elsewhere` cannot pass as inside
    `file:///store`.
    """
    scheme = next((s for s in SCHEMES if raw.startswith(s)), None)
    if scheme is None:
        raise InvalidArgument(field, f"{raw!r}: unsupported scheme; use file:///abs/dir/... or s3://bucket/...")
    path = raw[len(scheme) :].rstrip("/")
    if scheme == "file://":
        path = urllib.parse.unquote(path)
        if not path.startswith("/"):
            raise InvalidArgument(field, f"{raw!r}: a file URI needs an absolute path (file:///abs/dir/...)")
        path = path[1:]
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidArgument(field, f"{raw!r} has an empty, '.' or '..' path segment")
    if scheme == "file://":
        return "file://" + urllib.parse.quote("/" + path)
    return scheme + path


def _home(store: Store | str | None) -> Store | str:
    return store if store is not None else default_store_uri()


def _candidates(store: Store | str | None, allowed: Allowed) -> list[Store | str]:
    out: list[Store | str] = [_home(store)]
    if allowed is ANY:
        out.append(default_store_uri())  # what parse_uri trusts too: the configured store knows its own prefix
    elif allowed is not None:
        out.extend(allowed)  # type: ignore[arg-type]  # a Sequence here: ANY and None are handled above
    return out


def _uri_of(s: Store | str) -> str:
    return s.uri if isinstance(s, Store) else canonical_uri(s)


def _known_store(store: Store | str | None, allowed: Allowed, uri: str) -> tuple[Store, str] | None:
    """(store, key) when `uri` lies in one of the stores the caller knows, the longest match; else None."""
    matches = [(s, _uri_of(s)) for s in _candidates(store, allowed)]
    matches = [(s, u) for s, u in matches if uri.startswith(u + "/")]
    if not matches:
        return None
    s, u = max(matches, key=lambda m: len(m[1]))
    return _open(s, store), uri[len(u) + 1 :]


def _structural_split(uri: str, field: str, store: Store | str | None) -> tuple[Store, str]:
    """An artifact URI in a store nobody configured: the store is everything before its last two segments."""
    root, _, name = uri.rpartition("/")
    root, _, kind = root.rpartition("/")
    rest = root.partition("://")[2]
    if not kind or not rest.strip("/"):
        raise InvalidArgument(field, f"{uri!r}: expected a store URI followed by /<kind>/<name>")
    return _open(root, store), f"{kind}/{name}"


def _open(s: Store | str, store: Store | str | None) -> Store:
    """The Store for `s`, reusing `store` when it is the same one (no second connection)."""
    if isinstance(s, Store):
        return s
    uri = canonical_uri(s)
    return store if isinstance(store, Store) and store.uri == uri else open_store(uri)


def _outside(raw: str, store: Store | str | None, allowed: Allowed, field: str) -> PermissionDenied:
    # Refused before the other store is opened, so the reply is the same whether or not the thing exists there.
    names = ", ".join(_uri_of(s) for s in _candidates(store, allowed)) or "none"
    return PermissionDenied(f"{field}: {raw} is outside the store(s) this service may read ({names})")
