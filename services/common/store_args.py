"""The `--store URI` option, as every command and server that reads or writes artifacts takes it.

    add_store_argument(parser)                                  # a server's or a command's own parser
    sub.add_parser("ls", parents=[store_parent()])              # subcommands share it through a parent parser

`args.store` is None when not given, and `open_store(None)` falls back to $SMF_STORE or ~/.smf/store.
"""

from __future__ import annotations

import argparse

STORE_HELP = "store URI (file:///dir or s3://bucket/prefix); default $SMF_STORE or ~/.smf/store"


def add_store_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--store URI` to `parser`; returns `parser`."""
    parser.add_argument("--store", metavar="URI", default=None, help=STORE_HELP)
    return parser


def store_parent() -> argparse.ArgumentParser:
    """A parent parser holding `--store`, for subcommands: `sub.add_parser("ls", parents=[store_parent()])`."""
    return add_store_argument(argparse.ArgumentParser(add_help=False))
