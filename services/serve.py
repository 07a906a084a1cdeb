"""`smf serve SVC [options]` — run one smf service as a gRPC server until SIGTERM.

    SMF_TOKEN=secret smf serve gan --port 50051
    smf serve artifact --store s3://smf/store --insecure       # no token: only on a private network
    smf serve rnn --help                                        # the options of one service

Each service parses its own options: `smf.<svc>.server.main(argv)`. This entry point holds the table of services,
so that `smf.common` never has to name one.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from smf.common.errors import FailedPrecondition

SERVICES = {
    "gan": "smf.gan.server",
    "grid": "smf.grid.server",
    "som": "smf.som.server",
    "rnn": "smf.rnn.server",
    "pipeline": "smf.pipeline.server",
    "artifact": "smf.artifact.server",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run a service as a gRPC server (health, metrics, auth included)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("service", choices=sorted(SERVICES), help="which service")
    # everything after the service name belongs to that service's own parser (so `--help` shows its options)
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of the service (see smf serve SVC --help)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    module_name = SERVICES[args.service]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise FailedPrecondition(f"service {args.service!r} is not available in this build ({module_name})") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(module.main(list(args.args)) or 0)
