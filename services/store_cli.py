"""`smf store …` — look into and copy to/from the artifact store.

    smf store ls gan/                          # keys in the default store ($SMF_STORE or ~/.smf/store)
    smf store ls -l --store s3://smf/team-a    # with size, sha256 and time
    smf store cp ./mydata store:datasets/mine -r        # local folder -> store prefix
    smf store cp s3://smf/grids/g1/grid.json ./grid.json
    smf store cat grids/g1/grid.json
    smf store url renders/r1/0.wav --expires 600        # a link a browser or curl can fetch
    smf store sweep --older-than 3600                   # drop staging/claims of writers that died (smf.common.commit)
    smf store init --store s3://smf/team-a              # create the bucket (reads never do)

In `cp`, an argument with a scheme (s3://, file://) is a full store URI, `store:KEY` is a key in the --store
store, and anything else is a local path. Elsewhere a plain argument is a key in the --store store.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from smf.common.errors import InvalidArgument, NotFound
from smf.common.refs import ANY, is_uri, resolve_key
from smf.common.store import Store, open_store, validate_key
from smf.common.store_args import store_parent


def register(subparsers) -> None:
    common = store_parent()
    p = subparsers.add_parser("store", help="list, copy, print and share artifacts in the store")
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    ls = sub.add_parser("ls", parents=[common], help="list keys under a prefix")
    ls.add_argument("prefix", nargs="?", default="", help="key prefix (a folder) or store URI")
    ls.add_argument("-l", "--long", action="store_true", help="show size, modification time and sha256")
    ls.set_defaults(func=cmd_ls)

    cp = sub.add_parser("cp", parents=[common], help="copy between local paths and the store")
    cp.add_argument("src", help="local path, store URI, or store:KEY")
    cp.add_argument("dst", help="local path, store URI, or store:KEY")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy a folder / key prefix")
    cp.set_defaults(func=cmd_cp)

    cat = sub.add_parser("cat", parents=[common], help="write an object to stdout (sha256 verified)")
    cat.add_argument("key", help="key or store URI")
    cat.set_defaults(func=cmd_cat)

    url = sub.add_parser("url", parents=[common], help="print a URL that fetches an object without credentials")
    url.add_argument("key", help="key or store URI")
    url.add_argument("--expires", type=int, default=3600, metavar="S", help="lifetime in seconds (S3 only)")
    url.set_defaults(func=cmd_url)

    sweep = sub.add_parser("sweep", parents=[common], help="remove stale staging and claims of crashed writers")
    sweep.add_argument("--older-than", type=float, default=None, metavar="S", help="default $SMF_STAGING_MAX_AGE_S")
    sweep.set_defaults(func=cmd_sweep)

    init = sub.add_parser("init", parents=[common], help="create the store (an S3 bucket) if it is missing")
    init.set_defaults(func=cmd_init)


def _resolve(arg: str, store_uri: str | None, field: str) -> tuple[Store, str]:
    """A key/URI argument -> (store, key). Keys may be given as `store:KEY` too; a URI may name any store (the
    user's own rights), and one inside --store resolves to it."""
    if is_uri(arg):
        return resolve_key(store_uri, arg, field=field, allowed=ANY)
    return open_store(store_uri), arg.removeprefix("store:")


def _is_remote(arg: str) -> bool:
    return is_uri(arg) or arg.startswith("store:")


def cmd_ls(args) -> int:
    if is_uri(args.prefix):
        try:
            store, prefix = _resolve(args.prefix.rstrip("/"), args.store, "prefix")
        except InvalidArgument:  # the URI of a store root itself
            store, prefix = open_store(args.prefix), ""
    else:
        store, prefix = open_store(args.store), args.prefix.removeprefix("store:")
    for key in store.list(prefix):
        if args.long:
            info = store.stat(key)
            when = datetime.fromtimestamp(info.modified).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{info.size:>12}  {when}  {info.sha256[:12]:12}  {key}")
        else:
            print(key)
    return 0


def cmd_sweep(args) -> int:
    from smf.common.commit import sweep

    for entry in sweep(open_store(args.store), args.older_than):
        print(f"removed {entry}")
    return 0


def cmd_init(args) -> int:
    store = open_store(args.store)
    init = getattr(store, "init", None)
    if init is not None:  # S3; a file store's folder exists once opened
        init()
    print(store.uri)
    return 0


def cmd_cat(args) -> int:
    store, key = _resolve(args.key, args.store, "key")
    out = sys.stdout.buffer
    # Buffer locally first: iter_chunks verifies only after the last chunk, and a pipe can't take bytes back.
    with tempfile.TemporaryFile() as tmp:
        for chunk in store.iter_chunks(validate_key(key)):
            tmp.write(chunk)
        tmp.seek(0)
        while chunk := tmp.read(1 << 20):
            out.write(chunk)
    out.flush()
    return 0


def cmd_url(args) -> int:
    store, key = _resolve(args.key, args.store, "key")
    print(store.presigned_url(key, expires_s=args.expires))
    return 0


def cmd_cp(args) -> int:
    src_remote, dst_remote = _is_remote(args.src), _is_remote(args.dst)
    if not src_remote and not dst_remote:
        raise InvalidArgument(
            "src",
            "one side of cp must be in the store (a store URI or store:KEY); use your shell's cp for local copies",
        )
    pairs = _plan(args, src_remote, dst_remote)
    for copy in pairs:
        copy()
    return 0


def _plan(args, src_remote: bool, dst_remote: bool) -> list:
    """The list of single-object copies `cp` will do (all validated before the first byte moves)."""
    copies = []
    if src_remote:
        src_store, src_key = _resolve(args.src, args.store, "src")
        if args.recursive:
            src_key = src_key.rstrip("/")
            keys = src_store.list(src_key)
            if not keys:
                raise NotFound(f"{src_store.uri}/{src_key}/: no objects under this prefix")
            items = [(k, k[len(src_key) + 1 :]) for k in keys]
        else:
            validate_key(src_key)
            items = [(src_key, Path(src_key).name)]
    else:
        src = Path(args.src)
        if args.recursive:
            if not src.is_dir():
                raise InvalidArgument(args.src, "not a folder (cp -r copies a folder)")
            items = [(p, p.relative_to(src).as_posix()) for p in sorted(src.rglob("*")) if p.is_file()]
        else:
            if not src.is_file():
                raise InvalidArgument(args.src, "no such file")
            items = [(src, src.name)]

    if dst_remote:
        dst_store, dst_key = _resolve(args.dst, args.store, "dst")
        dst_key = dst_key.rstrip("/")
        # "cp x store:dir/" or -r: the destination is a prefix, else it is the key itself.
        as_prefix = args.recursive or args.dst.endswith("/")
        for src_item, rel in items:
            key = validate_key(f"{dst_key}/{rel}" if as_prefix else dst_key)
            if src_remote:
                copies.append(lambda s=src_item, k=key: _store_to_store(src_store, s, dst_store, k))
            else:
                copies.append(lambda s=src_item, k=key: _report(dst_store.put_file(k, s), dst_store.key_uri(k)))
    else:
        dst = Path(args.dst)
        as_dir = args.recursive or dst.is_dir() or args.dst.endswith(os.sep)
        for src_item, rel in items:
            path = dst / rel if as_dir else dst
            copies.append(lambda s=src_item, p=path: _report(src_store.get_file(s, p), str(p)))
    return copies


def _store_to_store(src: Store, src_key: str, dst: Store, dst_key: str) -> None:
    # Through a local temp file: keeps memory flat for checkpoints and works across backends.
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "object"
        src.get_file(src_key, local)
        _report(dst.put_file(dst_key, local), dst.key_uri(dst_key))


def _report(sha: str, where: str) -> None:
    print(f"{where}  sha256:{sha[:12]}")
