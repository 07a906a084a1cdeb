"""`smf som …` — linearize a grid with the GAN in the loop, render the linearized grid, list linearizations.

smf som linearize grids/<id> --iterations 100 --features perceptual      # -> som/<id> (here, GAN in-process)
smf som linearize grids/<id> --gan localhost:50051                        # renders through GAN replicas
smf som linearize grids/<id> --remote localhost:50053                     # as an operation of the SOM service
smf som render som/<id> --d0 21 --d1 21 --pm                              # -> grids/<id>, kind "som-grid"
smf som ls
"""

from __future__ import annotations

from smf.common.errors import InvalidArgument
from smf.common.store import open_store
from smf.common.store_args import store_parent


def register(subparsers) -> None:
    common = store_parent()
    common.add_argument(
        "--remote", metavar="HOST:PORT", default=None, help="use the SOM service at HOST:PORT instead of running here"
    )
    common.add_argument(
        "--gan",
        metavar="HOST:PORT",
        nargs="+",
        default=None,
        help="when running here: render through these GAN service replicas instead of loading the model in-process",
    )
    p = subparsers.add_parser("som", help="linearize grids so neighbouring cells sound equally far apart")
    sub = p.add_subparsers(dest="som_command", metavar="ACTION", required=True)

    lz = sub.add_parser("linearize", parents=[common], help="relax a grid's latents (GAN in the loop) -> som/<id>")
    lz.add_argument("grid", help="grid id (grids/<id> or <id>) or artifact URI")
    lz.add_argument("--iterations", type=int, default=200, help="maximum iterations (default 200)")
    lz.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="stop when the mean move falls below this many mesh spacings (default 1e-4)",
    )
    lz.add_argument(
        "--features",
        default="spectrogram",
        help="spectrogram (default), logmel, mfcc, centroid, loudness or perceptual",
    )
    lz.add_argument(
        "--weight",
        metavar="GROUP=W",
        action="append",
        default=[],
        help="feature group weight, e.g. --weight loudness=0.5 (perceptual: logmel, centroid, loudness)",
    )
    lz.add_argument(
        "--rule",
        default="even",
        choices=["even", "original"],
        help="even (scale-free, default) or original (the seed notebook's rule)",
    )
    lz.add_argument("--step", type=float, default=None, help="step size (default 0.1 even, 0.025 original)")
    lz.add_argument(
        "--axes",
        default="both",
        choices=["both", "dim0", "dim1"],
        help="which way points move: both (default), dim0 (along rows) or dim1 (along columns)",
    )
    lz.add_argument("--seed", type=int, default=0, help="recorded with the result")
    lz.add_argument("--id", default="", help="artifact id to create (som/<name>); default a new id")
    lz.set_defaults(func=cmd_linearize)

    r = sub.add_parser("render", parents=[common], help="render som/<id> through the GAN -> a som-grid")
    r.add_argument("linearized", help="linearization id (som/<id> or <id>) or artifact URI")
    r.add_argument("--d0", type=int, default=0, help="columns; must match the tensor (default: take it from it)")
    r.add_argument("--d1", type=int, default=0, help="rows; must match the tensor (default: take it from it)")
    r.add_argument("--pm", action="store_true", help="write a .params file (dim0, dim1, envPt) beside each wav")
    r.add_argument("--id", default="", help="grid id to create (grids/<name>); default a new id")
    r.set_defaults(func=cmd_render)

    ls = sub.add_parser("ls", parents=[common], help="list the linearizations in the store, newest first")
    ls.add_argument("--grid", default="", help="only those of this grid")
    ls.set_defaults(func=cmd_ls)


def parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InvalidArgument("--weight", f"expected GROUP=NUMBER, got {item!r}")
    return weights


def _bar(total: int, desc: str, unit: str):
    from smf.common.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit=unit)


def _render_fn(store, model: str, gan_targets):
    """Render latents [N, dim] -> audio [N, T]: through GAN replicas, or with the model loaded here."""
    if gan_targets:
        from smf.gan.client import GanClient

        gan = GanClient(gan_targets)
        return lambda z: gan.render_latents(model, z, output="inline").audio
    import torch
    from smf.gan.runs import load_model

    loaded = load_model(store, model)
    return lambda z: loaded.render(torch.as_tensor(z)).numpy()


def _follow(client, op, desc: str, unit: str):
    bar = _bar(op.progress.total or 0, desc, unit)

    def show(o):
        bar.total = o.progress.total or bar.total
        bar.n = o.progress.step
        bar.set_postfix_str(o.progress.message, refresh=True)

    try:
        return client.wait(op.id, on_progress=show)
    finally:
        bar.close()


def cmd_linearize(args) -> int:
    weights = parse_weights(args.weight)
    if args.remote:
        from smf.som.client import SomClient

        with SomClient(args.remote) as som:
            op = som.start_linearize(
                args.grid,
                iterations=args.iterations,
                tolerance=args.tolerance,
                rule=args.rule,
                step=args.step,
                features=args.features,
                feature_weights=weights,
                axes=args.axes,
                seed=args.seed,
                linearization_id=args.id,
            )
            op = _follow(som, op, "linearize", "it")
            lz = som.get(op.result_uris[0])
            print(
                f"evenness (CoV of adjacent distances): {lz.before.cov:.3f} -> {lz.after.cov:.3f}, "
                f"max/min {lz.before.max_min_ratio:.2f} -> {lz.after.max_min_ratio:.2f} "
                f"after {lz.iterations} iterations"
            )
            print(f"linearized: {op.result_uris[0]}")
        return 0
    from smf.som import linearize as lin
    from smf.som.features import FeatureExtractor
    from smf.som.som import SomConfig

    store = open_store(args.store)
    grid = lin.load_grid(store, lin.artifact_ref(store, args.grid, "grids", field="grid"))
    lin.require_model(store, grid.model, used_by=grid.grid_id)
    config = SomConfig(
        rule=args.rule, step=args.step, iterations=args.iterations, tolerance=args.tolerance, axes=args.axes
    )
    config.validate()
    FeatureExtractor(args.features, sample_rate=grid.sample_rate, weights=weights)  # bad kind/weights: fail now
    bar = _bar(args.iterations, "linearize", "it")

    def show(it: int, m: dict) -> None:
        bar.n = it
        bar.set_postfix_str(f"CoV {m['cov']:.3f}", refresh=True)

    try:
        out = lin.linearize(
            store,
            grid,
            _render_fn(store, grid.model, args.gan),
            config=config,
            features=args.features,
            feature_weights=weights,
            seed=args.seed,
            som_id=args.id,
            on_iteration=show,
        )
    finally:
        bar.close()
    m = out.metrics
    print(
        f"evenness (CoV of adjacent distances): {m['before']['cov']:.3f} -> {m['after']['cov']:.3f}, "
        f"max/min {m['before']['max_min_ratio']:.2f} -> {m['after']['max_min_ratio']:.2f} "
        f"after {m['iterations']} iterations"
    )
    print(f"linearized: {store.key_uri(out.som_id)}")
    return 0


def cmd_render(args) -> int:
    if args.remote:
        from smf.som.client import SomClient

        with SomClient(args.remote) as som:
            op = som.start_render(args.linearized, d0=args.d0, d1=args.d1, pm=args.pm, grid_id=args.id)
            op = _follow(som, op, "render", "cell")
            print(f"grid: {op.result_uris[0]}  (smf grid open {op.result_uris[0].rsplit('/', 1)[1]})")
        return 0
    from smf.som import linearize as lin

    store = open_store(args.store)
    som_id = lin.artifact_ref(store, args.linearized, "som", field="linearized")
    _, metrics = lin.load_linearized(store, som_id, d0=args.d0, d1=args.d1)  # d0/d1 checked before any render
    lin.require_model(store, metrics["model"], used_by=som_id)
    bar = _bar(metrics["d0"] * metrics["d1"], "render", "cell")

    def show(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        manifest = lin.render_linearized(
            store,
            som_id,
            _render_fn(store, metrics["model"], args.gan),
            d0=args.d0,
            d1=args.d1,
            pm=args.pm,
            grid_id=args.id,
            on_progress=show,
        )
    finally:
        bar.close()
    print(f"grid: {store.key_uri(manifest.id)}  (smf grid open {manifest.id})")
    return 0


def cmd_ls(args) -> int:
    if args.remote:
        from smf.som.client import SomClient

        with SomClient(args.remote) as som:
            rows = [
                {
                    "id": x.artifact.id,
                    "grid": x.grid_id,
                    "features": x.features,
                    "iterations": x.iterations,
                    "before": x.before.cov,
                    "after": x.after.cov,
                }
                for x in som.list(args.grid)
            ]
    else:
        from smf.common.lineage import list_artifacts, read_manifest
        from smf.som.linearize import artifact_ref

        store = open_store(args.store)
        want = artifact_ref(store, args.grid, "grids", field="--grid") if args.grid else None
        rows = []
        for aid in reversed(list_artifacts(store, "som")):
            cfg = read_manifest(store, aid).config or {}
            if want and cfg.get("grid") != want:
                continue
            rows.append(
                {
                    "id": aid,
                    "grid": cfg.get("grid", ""),
                    "features": (cfg.get("features") or {}).get("kind"),
                    "iterations": cfg.get("iterations", 0),
                    "before": (cfg.get("before") or {}).get("cov", 0),
                    "after": (cfg.get("after") or {}).get("cov", 0),
                }
            )
    if not rows:
        print("no linearizations yet (smf som linearize GRID)")
        return 0
    print(f"{'id':34} {'grid':34} {'features':12} {'iter':>5}  CoV before -> after")
    for r in rows:
        print(
            f"{r['id']:34} {r['grid']:34} {r['features'] or '-':12} {r['iterations']:>5}  "
            f"{r['before']:.3f} -> {r['after']:.3f}"
        )
    return 0
