"""The committed generated code matches the protos (what `make proto` would write), and buf lint passes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tools/ is a build folder, not a package: load the generator from its file, as `make proto` runs it
_spec = importlib.util.spec_from_file_location("protogen", REPO / "tools/protogen.py")
protogen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protogen)


def test_generated_code_is_up_to_date():
    changed = protogen.diff()
    assert not changed, "generated code is out of date; run `make proto` and commit:\n" + "\n".join(changed)


def test_generation_is_deterministic_and_imports_absolutely():
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        first, second = protogen.generate(Path(a)), protogen.generate(Path(b))
        assert first == second
        assert all((Path(a) / p).read_bytes() == (Path(b) / p).read_bytes() for p in first)
    grpc_code = (REPO / "services/common/v1/operations_pb2_grpc.py").read_text()
    assert "from smf.common.v1 import operations_pb2" in grpc_code


def test_generated_modules_import():
    from smf.common.v1 import artifact_pb2_grpc, common_pb2, operations_pb2_grpc

    assert common_pb2.Operation.STATE_CANCELLED == 5
    assert hasattr(operations_pb2_grpc, "OperationServiceStub") and hasattr(artifact_pb2_grpc, "ArtifactServiceStub")


@pytest.mark.skipif(not (REPO / "node_modules/.bin/buf").exists(), reason="buf not installed (npm install)")
def test_buf_lint():
    npx = shutil.which("npx")
    cmd = [npx, "buf", "lint", "proto"] if npx else [str(REPO / "node_modules/.bin/buf"), "lint", "proto"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"buf lint found problems:\n{result.stdout}{result.stderr}"
