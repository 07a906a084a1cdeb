"""Generate the Python gRPC code of every smf API from proto/ (what `make proto` runs).

    .venv/bin/python tools/protogen.py            # regenerate services/<svc>/v1/*_pb2*.py(i)
    .venv/bin/python tools/protogen.py --check    # exit 1 when the committed files differ (CI)

A build tool, not part of the installed package: it needs grpcio-tools (the `test` extra) and a checkout with proto/.

Proto package `smf.<svc>.v1` lives in `proto/smf/<svc>/v1/`; protoc writes `smf/<svc>/v1/x_pb2.py`, which we place
in `services/<svc>/v1/` (the folder the import package `smf` maps to). The generated code imports absolutely
(`from smf.common.v1 import common_pb2`). Output only depends on the proto files and the grpcio-tools version.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from smf.common.errors import FailedPrecondition

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"
SERVICES = REPO / "services"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every API file, sorted so that protoc sees them in a stable order."""
    return sorted(proto_root.glob("smf/*/v1/*.proto"))


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc over every proto into `out_root/<svc>/v1/`; returns the files written (relative to out_root)."""
    from grpc_tools import protoc  # test extra; imported here so `smf` itself does not need it

    files = proto_files(proto_root)
    if not files:
        raise FailedPrecondition(f"no proto files under {proto_root}/smf/*/v1/")
    wkt = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto shipped with grpcio-tools
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{wkt}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
        ] + [str(f.relative_to(proto_root)) for f in files]
        if protoc.main(args) != 0:
            raise FailedPrecondition(f"protoc failed on {proto_root} (see the messages above)")
        written = []
        for src in sorted((Path(tmp) / "smf").glob("*/v1/*")):
            rel = src.relative_to(Path(tmp) / "smf")
            dst = out_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.append(rel)
    return written


def generated_files(root: Path) -> list[Path]:
    """Generated files currently under `root/<svc>/v1/`, relative to root."""
    return sorted(p.relative_to(root) for p in root.glob("*/v1/*") if p.name.endswith(GENERATED_SUFFIXES))


def diff(services: Path = SERVICES, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Files that `make proto` would add, change or delete under services/ (empty = up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = set(generate(Path(tmp), proto_root))
        current = set(generated_files(services))
        changed = [f"missing: {p}" for p in sorted(fresh - current)]
        changed += [f"stale: {p}" for p in sorted(current - fresh)]
        changed += [
            f"differs: {p}"
            for p in sorted(fresh & current)
            if not filecmp.cmp(Path(tmp) / p, services / p, shallow=False)
        ]
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/protogen.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        changed = diff()
        for line in changed:
            print(line)
        return 1 if changed else 0
    written = set(generate(SERVICES))
    for stale in set(generated_files(SERVICES)) - written:  # a deleted proto must not leave its code behind
        (SERVICES / stale).unlink()
    for rel in sorted(written):
        init = SERVICES / rel.parent / "__init__.py"
        if not init.exists():  # protoc writes none; the import package needs one
            init.write_text("")
    print(f"generated {len(written)} files from {len(proto_files())} protos into {SERVICES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
