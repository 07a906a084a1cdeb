"""`smf` — the command line of the Sound Model Factory.

Each area registers its own subcommands from a small module (`smf.<area>.cli`, function `register(subparsers)`),
so the services stay independent and this file only wires them together:

    smf datasets make tones
    smf gan train -n mygan config.json
    smf serve gan --port 50051
"""

from __future__ import annotations

import argparse
import importlib
import sys

from smf import __version__
from smf.common.errors import SmfError

# Areas that contribute subcommands, in the order `smf --help` lists them.
COMMAND_MODULES = [
    "smf.store_cli",
    "smf.datasets.cli",
    "smf.gan.cli",
    "smf.grid.cli",
    "smf.som.cli",
    "smf.rnn.cli",
    "smf.pipeline.cli",
    "smf.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smf", description="Sound Model Factory: folder of sounds -> playable synth.")
    parser.add_argument("--version", action="version", version=f"smf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # area not built yet; anything else missing is a real error
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SmfError as exc:
        print(f"smf: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("smf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
