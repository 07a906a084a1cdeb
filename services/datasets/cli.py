"""`smf datasets …` — make the built-in synthetic datasets, import a folder of sounds, list what is stored.

smf datasets make tones                          # -> datasets/tones in $SMF_STORE or ~/.smf/store
smf datasets make pops --n 32 --seed 3 --duration 2 --store s3://smf/team-a
smf datasets import ~/sounds/rain --name rain --rate 16000 --mono mean
smf datasets ls
"""

from __future__ import annotations

from smf.common.errors import NotFound
from smf.common.lineage import list_artifacts, read_manifest
from smf.common.store import open_store
from smf.common.store_args import store_parent
from smf.datasets.files import KIND, dataset_id, make_dataset
from smf.datasets.generators import DEFAULTS, GENERATORS
from smf.datasets.importer import MONO_POLICIES, ON_BAD_FILE, import_dataset


def register(subparsers) -> None:
    common = store_parent()
    p = subparsers.add_parser("datasets", help="make built-in datasets, import sounds, list datasets")
    sub = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)

    defaults = ", ".join(f"{k}: {n} x {d:g} s" for k, (n, d) in DEFAULTS.items())
    make = sub.add_parser(
        "make",
        parents=[common],
        help="generate a built-in synthetic dataset",
        description=f"Generate a built-in dataset (wav + .params). Defaults: {defaults}.",
    )
    make.add_argument("name", choices=sorted(GENERATORS), help="which dataset")
    make.add_argument("--n", type=int, default=None, metavar="N", help="number of files")
    make.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (same seed, same files)")
    make.add_argument("--duration", type=float, default=None, metavar="SEC", help="seconds per file")
    make.add_argument("--rate", type=int, default=16000, metavar="HZ", help="sample rate (default 16000)")
    make.add_argument(
        "--as",
        dest="out_name",
        default=None,
        metavar="NAME",
        help="store it as datasets/NAME instead of datasets/<name>",
    )
    make.add_argument("--force", action="store_true", help="replace an existing dataset of that name")
    make.set_defaults(func=cmd_make)

    imp = sub.add_parser("import", parents=[common], help="import a folder of audio files (+ optional .params)")
    imp.add_argument("dir", help="folder with the audio files (searched recursively)")
    imp.add_argument("--name", required=True, help="dataset name: stored as datasets/NAME")
    imp.add_argument("--rate", type=int, default=None, metavar="HZ", help="resample every file to this rate")
    imp.add_argument(
        "--mono",
        choices=MONO_POLICIES,
        default="error",
        help="multi-channel files: error (default), mean of channels, or first channel",
    )
    imp.add_argument("--require-params", action="store_true", help="every file must have a .params beside it")
    imp.add_argument(
        "--on-bad-file",
        choices=ON_BAD_FILE,
        default="error",
        help="a file that is not usable audio (corrupt, empty, silent...): error (default) or skip it (listed)",
    )
    imp.add_argument("--force", action="store_true", help="replace an existing dataset of that name")
    imp.set_defaults(func=cmd_import)

    ls = sub.add_parser("ls", parents=[common], help="list the datasets in the store")
    ls.set_defaults(func=cmd_ls)


def cmd_make(args) -> int:
    store = open_store(args.store)
    aid = dataset_id(args.out_name or args.name)
    existed = _committed(store, aid)
    aid = make_dataset(
        args.name,
        store,
        n_files=args.n,
        seed=args.seed,
        sample_rate=args.rate,
        duration=args.duration,
        out_name=args.out_name,
        overwrite=args.force,
        progress=True,
    )
    manifest = read_manifest(store, aid)
    n = sum(name.endswith(".wav") for name in manifest.files)
    if existed and manifest.created_at == existed:
        print(f"{aid} already exists with these settings ({n} files), unchanged: {store.key_uri(aid)}")
    else:
        print(f"wrote {n} wav + .params files to {store.key_uri(aid)}")
    return 0


def cmd_import(args) -> int:
    store = open_store(args.store)
    aid = import_dataset(
        args.dir,
        store,
        name=args.name,
        sample_rate=args.rate,
        mono=args.mono,
        require_params=args.require_params,
        on_bad_file=args.on_bad_file,
        overwrite=args.force,
        progress=True,
    )
    manifest = read_manifest(store, aid)
    for skip in manifest.config.get("skipped", []):
        print(f"skipped {skip['file']}: {skip['reason']}")
    if manifest.config.get("n_skipped"):
        print(f"skipped {manifest.config['n_skipped']} bad files (listed in the manifest's config)")
    n = sum(name.endswith(".wav") for name in manifest.files)
    n_params = sum(name.endswith(".params") for name in manifest.files)
    print(
        f"imported {n} audio files ({n_params} with .params) at {manifest.config['sample_rate']} Hz to "
        f"{store.key_uri(aid)}"
    )
    return 0


def cmd_ls(args) -> int:
    store = open_store(args.store)
    ids = list_artifacts(store, KIND)
    if not ids:
        print(f"no datasets in {store.uri} (make one: smf datasets make tones)")
    for aid in ids:
        m = read_manifest(store, aid)
        cfg = m.config if isinstance(m.config, dict) else {}
        n = sum(name.endswith(".wav") for name in m.files)
        origin = cfg.get("generator") or cfg.get("source") or "?"
        params = " ".join(cfg.get("params") or []) or "-"
        print(
            f"{aid:28} {n:5} files  {cfg.get('sample_rate', '?'):>6} Hz  params: {params:24} from {origin}"
            f"  ({m.created_at})"
        )
    return 0


def _committed(store, aid: str) -> str | None:
    """created_at of the committed dataset `aid`, or None."""
    try:
        return read_manifest(store, aid).created_at
    except NotFound:
        return None
