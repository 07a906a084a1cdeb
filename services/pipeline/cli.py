"""`smf pipeline run [CONFIG] [--demo]` and `smf pipeline status RUN`.

smf pipeline run --demo                                   # built-in tones, tiny configs, local services
smf pipeline run my.json --store s3://smf/team
smf pipeline run my.json --remote gan=h:50051,grid=h:50052,som=h:50053,rnn=h:50054   # token from $SMF_TOKEN
smf pipeline status demo
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smf.common.store_args import add_store_argument

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="folder of sounds -> playable synth, every stage through the services",
        description=__doc__.splitlines()[0],
    )
    sub = p.add_subparsers(dest="pipeline_command", metavar="COMMAND")
    run = sub.add_parser("run", help="run (or resume) a pipeline; unchanged stages are skipped")
    run.add_argument("config", nargs="?", help="pipeline config JSON (see services/pipeline/configs/demo.json)")
    run.add_argument("--demo", action="store_true", help="the built-in demo config (tiny models, < 10 min on 2 CPUs)")
    run.add_argument(
        "--remote",
        metavar="gan=H:P,grid=H:P,som=H:P,rnn=H:P",
        help="use running services instead of starting them locally (token from $SMF_TOKEN)",
    )
    add_store_argument(run)
    run.add_argument("--name", help="run name (default: the config's name)")
    run.add_argument("--logs", help="folder for the local services' logs (default: a temp folder)")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="show the stages of a pipeline run")
    status.add_argument("run", help="run name (pipelines/<run> in the store)")
    add_store_argument(status)
    status.set_defaults(func=cmd_status)
    p.set_defaults(func=lambda a: p.print_help() or 2)


def _file_path(store, key: str) -> str:
    """A local path for file:// stores (what a user can open), else the URI."""
    uri = store.key_uri(key)
    return uri.removeprefix("file://")


def cmd_run(args: argparse.Namespace) -> int:
    from smf.common.errors import InvalidArgument
    from smf.common.store import open_store
    from smf.pipeline.config import DEMO_CONFIG, load_config
    from smf.pipeline.pipeline import Pipeline
    from smf.pipeline.services import local_services, parse_remote, remote_services

    if bool(args.config) == bool(args.demo):
        raise InvalidArgument("config", "give a pipeline config file or --demo (not both)")
    cfg = load_config(DEMO_CONFIG if args.demo else args.config)
    if args.name:
        cfg.name = args.name
    store = open_store(args.store)
    t0 = time.monotonic()
    print(f"pipeline {cfg.name}: store {store.uri}", flush=True)

    def log(msg):
        return print(f"{time.monotonic() - t0:7.1f}s {msg}", flush=True)

    if args.remote:
        state = Pipeline(cfg, store, remote_services(parse_remote(args.remote)), log=log).run()
    else:
        log_dir = Path(args.logs) if args.logs else None
        with local_services(store.uri, log_dir=log_dir) as svc:
            log(f"services up: {', '.join(f'{k} {v}' for k, v in svc.targets.items())} (logs {svc.logs['gan'].parent})")
            state = Pipeline(cfg, store, svc, log=log).run()
    wall = time.monotonic() - t0
    print(
        f"\npipeline {cfg.name} finished in {wall:.0f} s "
        f"({len(state['ran'])} stages run, {len(state['skipped'])} skipped)"
    )
    print(f"report: {_file_path(store, state['report'])}")
    for name, r in state["stages"]["renders"]["outputs"]["renders"].items():
        for w in r["wavs"]:
            print(f"render {name}: {_file_path(store, w)}")
    lin = state["stages"]["som_render"]["outputs"]["grid"]
    print(f"linearized grid (RNN training data): {_file_path(store, lin)}/")
    rnn = state["stages"]["rnn"]["outputs"]
    print(f"RNN model: {_file_path(store, rnn['model'])}/")
    if rnn.get("chain"):
        print(f"RNN parameter tier (the knobs): {_file_path(store, rnn['chain'])}/")
    play = f"smf rnn play --store {store.uri} -m {rnn['model']}" + (
        f" --chain {rnn['chain']}" if rnn.get("chain") else ""
    )
    print(f"play it: {play}")
    control = state["stages"].get("control", {}).get("outputs", {})
    if control:
        print(f"knobs: {_file_path(store, control['control'])}/control.png")
        print(control["table"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from smf.common.store import open_store
    from smf.pipeline.pipeline import describe, read_state

    print(describe(read_state(open_store(args.store), args.run)))
    return 0
