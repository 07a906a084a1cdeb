"""`smf grid …` — 4-corner latent grids (2D4pt) and the browser auditioner.

    smf grid 2d4pt --model mygan --z0 samples/<id>/0 --z1 samples/<id>/1 --z2 a.pt --z3 s3://smf/store/…/3.pt \\
                   --d0 21 --d1 21 --pm                       # renders here with the model from the store
    smf grid 2d4pt … --remote localhost:50052                 # as an operation of the grid service
    smf grid 2d4pt … --gan gan-0:50051 gan-1:50051            # here, but rendered by GAN service replicas
    smf grid open grids/<id>                                  # serves the page here and prints its URL
    smf grid open grids/<id> --url http://grid:8080           # prints the page URL of a running grid service
    smf grid open grids/<id> --rnn rnn:50054 --model rnn/NAME # + the live panel: pad and sliders play the RNN
    smf grid ls

Corners (z0 … z3) are store URIs, store keys, sample ids (`samples/<id>/3`) or local `.pt` files (a 1-D tensor).
"""

from __future__ import annotations

import os

from smf.common.errors import InvalidArgument
from smf.common.refs import ANY, is_uri, resolve
from smf.common.store import open_store
from smf.common.store_args import store_parent


def register(subparsers) -> None:
    store = store_parent()
    p = subparsers.add_parser("grid", help="4-corner latent grids and the browser auditioner")
    sub = p.add_subparsers(dest="grid_command", metavar="ACTION", required=True)

    g = sub.add_parser(
        "2d4pt",
        parents=[store],
        help="render a d0 x d1 grid between four corner latents",
        description="Rows i step from the line z0->z1 to the line z2->z3; columns j along each row.",
    )
    g.add_argument("-m", "--model", default="", help="model (gan/NAME); default: the model the corners came from")
    for n in range(4):
        g.add_argument(
            f"--z{n}",
            required=True,
            metavar="LATENT",
            help="store URI / key, sample id samples/<id>/<n>, or local .pt file",
        )
    g.add_argument("--d0", type=int, required=True, help="columns (steps along each row), 2..256")
    g.add_argument("--d1", type=int, required=True, help="rows, 2..256")
    g.add_argument("--pm", action="store_true", help="write a .params file (dim0, dim1, envPt) beside each wav")
    g.add_argument("--variations", type=int, default=1, help="sounds per cell (default 1)")
    g.add_argument("--spread", type=float, default=0.0, help="noise std of variations (default 0.1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the variation noise")
    g.add_argument("--slerp", action="store_true", help="spherical interpolation (keeps latent norms)")
    g.add_argument("--id", default="", help="grid id (grids/NAME); default a new time-stamped id")
    g.add_argument("--remote", metavar="HOST:PORT", default=None, help="use the grid service at HOST:PORT")
    g.add_argument(
        "--gan",
        metavar="HOST:PORT",
        nargs="+",
        default=None,
        help="render with these GAN service replicas instead of loading the model here",
    )
    g.add_argument("-o", "--out", default=None, help="also copy the cells (wav + .params) into this local folder")
    g.set_defaults(func=cmd_2d4pt)

    o = sub.add_parser("open", parents=[store], help="open a grid in the browser auditioner (prints the URL)")
    o.add_argument("grid", nargs="?", default="", help="grid id (grids/<id> or <id>); empty = the list of grids")
    o.add_argument("--compare", default=None, help="a second grid to show side by side (e.g. the linearized one)")
    o.add_argument("--url", default=None, help="base URL of a running grid service's HTTP port: just print the link")
    o.add_argument("--port", type=int, default=8080, help="port to serve the page on here (default 8080; 0 = any)")
    o.add_argument("--host", default="127.0.0.1", help="address to serve on here (default 127.0.0.1)")
    o.add_argument("--no-browser", action="store_true", help="do not start a web browser")
    from smf.grid.live import add_live_arguments

    add_live_arguments(o)
    o.set_defaults(func=cmd_open)

    ls = sub.add_parser("ls", parents=[store], help="list the grids in the store")
    ls.add_argument("--remote", metavar="HOST:PORT", default=None, help="ask the grid service at HOST:PORT")
    ls.set_defaults(func=cmd_ls)


def _corners(args) -> list:
    from smf.common.latents import latent_from_bytes

    corners = []
    for n in range(4):
        value = getattr(args, f"z{n}")
        if args.remote and not is_uri(value) and os.path.isfile(value):
            # a local file means nothing to a remote service: send the values
            with open(value, "rb") as f:
                value = latent_from_bytes(f.read(), source=value, field=f"--z{n}").tolist()
        corners.append(value)
    return corners


def _bar(total: int, desc: str):
    from smf.common.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="cell")


def cmd_2d4pt(args) -> int:
    interpolation = "slerp" if args.slerp else "linear"
    store = open_store(args.store)
    if args.remote:
        from smf.grid.client import GridClient

        with GridClient(args.remote) as grid:
            op = grid.create_grid(
                args.model,
                _corners(args),
                d0=args.d0,
                d1=args.d1,
                pm=args.pm,
                variations=args.variations,
                variation_spread=args.spread,
                seed=args.seed,
                interpolation=interpolation,
                grid_id=args.id,
            )
            bar = _bar(args.d0 * args.d1 * args.variations, "grid")

            def show(o):
                bar.total = o.progress.total or bar.total
                bar.n = o.progress.step
                bar.refresh()

            op = grid.wait(op.id, on_progress=show)
            bar.close()
        uri = op.result_uris[0]
    else:
        uri = _render_here(args, store, interpolation)
    print(f"grid: {uri}")
    if args.out:
        _copy_cells(store, uri, args.out)
    print(f"audition it: smf grid open {uri.rsplit('/', 2)[-2]}/{uri.rsplit('/', 1)[-1]}")
    return 0


def _plan_here(args, store, interpolation: str, latent_dim):
    from smf.grid.plan import plan_grid

    return plan_grid(
        store,
        corners=_corners(args),
        d0=args.d0,
        d1=args.d1,
        model=args.model,
        pm=args.pm,
        n_variations=args.variations,
        spread=args.spread,
        seed=args.seed,
        interpolation=interpolation,
        grid_id=args.id,
        latent_dim=latent_dim,
        allow_local=True,
        allowed=ANY,
    )


def _render_here(args, store, interpolation: str) -> str:
    from smf.grid.plan import render_plan

    if args.gan:
        from smf.gan.client import GanClient

        gan = GanClient(args.gan)

        def info(run):
            name = run.split("/", 1)[1]
            found = [m for m in gan.list_models(name) if m.name == name]
            if not found:
                raise InvalidArgument("--model", f"{run} is not known to the GAN service")
            return found[0]

        plan = _plan_here(args, store, interpolation, lambda r: info(r).latent_dim)
        sample_rate = info(plan.model).sample_rate

        def render(z):
            return gan.render_latents(plan.model, z, output="inline").audio

        batch = 32 * len(gan.stubs)
    else:
        import torch
        from smf.gan.runs import load_model

        models = {}

        def model(run):
            if run not in models:
                models[run] = load_model(store, run)
            return models[run]

        plan = _plan_here(args, store, interpolation, lambda r: model(r).latent_dim)
        m = model(plan.model)
        sample_rate = m.sample_rate

        def render(z):
            return m.render(torch.as_tensor(z)).numpy()

        batch = 32
    bar = _bar(plan.latents.shape[0] * plan.latents.shape[1] * plan.latents.shape[2], plan.grid_id)

    def progress(done, total):
        bar.n = done
        bar.refresh()

    try:
        render_plan(store, plan, render, sample_rate=sample_rate, on_progress=progress, batch_size=batch, service="cli")
    finally:
        bar.close()
    return store.key_uri(plan.grid_id)


def _copy_cells(store, uri: str, out: str) -> None:
    src, aid = resolve(store, uri, "grids", field="grid", allowed=ANY)
    os.makedirs(out, exist_ok=True)
    n = 0
    for key in src.list(f"{aid}/cells"):
        src.get_file(key, os.path.join(out, key.rsplit("/", 1)[1]))
        n += 1
    print(f"copied {n} files to {out}")


def cmd_open(args) -> int:
    from smf.grid.auditioner import Auditioner, artifact_id

    grid = args.grid
    store = open_store(args.store)
    if is_uri(grid):
        store, grid = resolve(store, grid, "grids", field="grid", allowed=ANY)
    if args.url:
        base = args.url.rstrip("/")
        link = f"{base}/{artifact_id(grid)}" if grid else f"{base}/"
        if args.compare:
            link += f"?compare={args.compare}"
        print(link)
        return 0
    if grid:
        from smf.common.lineage import read_manifest

        read_manifest(store, artifact_id(grid))  # NotFound now rather than in the browser
    from smf.grid.live import live_bridge

    live = live_bridge(args, token=os.environ.get("SMF_TOKEN"))
    # served here for this user only (loopback by default), so no token; the store credentials stay in this process
    aud = Auditioner(store, host=args.host, port=args.port, live=live)
    url = aud.page_url(grid, compare=args.compare) if grid else f"{aud.url}/"
    print(f"auditioner: {url}   (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        aud.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.close()
        aud.httpd.server_close()
    return 0


def cmd_ls(args) -> int:
    if args.remote:
        from smf.grid.client import GridClient

        with GridClient(args.remote) as client:
            rows = [(g.artifact.id, g.model, g.d0, g.d1, g.variations, g.create_time) for g in client.list_grids()]
    else:
        from smf.grid.auditioner import list_grids

        rows = [
            (g["id"], g["model"], g["d0"], g["d1"], g["variations"], g["created_at"])
            for g in list_grids(open_store(args.store))
        ]
    if not rows:
        print("no grids")
    for gid, model, d0, d1, var, created in rows:
        print(f"{gid}  {model or '?'}  d0={d0} d1={d1} variations={var or 1}  {created}")
    return 0
