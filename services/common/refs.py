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
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import TypeGuard

from smf.common.errors import InvalidArgument, PermissionDenied
from smf.common.store import Store, canonical_uri, default_store_uri, open_store, parse_uri, validate_key

__all__ = ["ANY", "artifact_id", "is_uri", "resolve", "resolve_key"]

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
