"""The container image recipe, checked without a Docker engine: stage layout, user, entrypoint, pins, and the
non-editable install the build stage performs (a real wheel built from this tree)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def stages() -> dict[str, list[str]]:
    """{stage name: instructions} with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            out[current] = []
        if current:
            out[current].append(line)
    return out


def test_multi_stage_with_a_clean_runtime():
    s = stages()
    assert list(s) == ["build", "runtime"]
    runtime = "\n".join(s["runtime"])
    assert "COPY --from=build /opt/smf /opt/smf" in runtime
    for tool in ("build-essential", "gcc", "g++", "make ", "git", "pip install"):
        assert tool not in runtime, f"runtime stage must not carry {tool.strip()}"
    assert "build-essential" in "\n".join(s["build"])


def test_runs_as_numeric_non_root_user_through_tini():
    runtime = stages()["runtime"]
    (user,) = [i for i in runtime if i.startswith("USER ")]
    uid, gid = user.split()[1].split(":")
    assert int(uid) >= 1000 and int(gid) >= 1000  # numeric: kubelet can check runAsNonRoot
    (entry,) = [i for i in runtime if i.startswith("ENTRYPOINT ")]
    assert entry == 'ENTRYPOINT ["tini", "--", "smf"]'
    env = " ".join(i for i in runtime if i.startswith("ENV "))
    assert "HOME=/tmp" in env and "MPLCONFIGDIR=/tmp/" in env  # read-only root filesystem


def test_torch_pin_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split("==")[0]: d for d in deps if d.startswith(("torch==", "torchaudio=="))}
    build = "\n".join(stages()["build"])
    assert f"pip install {pins['torch']} {pins['torchaudio']}" in build


def test_dockerignore_keeps_the_context_to_the_package():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines.count("**") == 1 and "!services/" in lines and "!setup.py" in lines


def test_wheel_the_image_installs_contains_the_package(tmp_path):
    """`pip install --no-deps .` in the build stage: the wheel must map services/ to smf with all subpackages.
    Built from a copy of exactly the files .dockerignore lets into the context (and so no build/ in the repo)."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "services", context / "services", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("smf/cli.py", "smf/common/k8s_jobs.py", "smf/common/jobs.py", "smf/common/v1/__init__.py"):
        assert module in names, module
    assert not any(n.startswith(("services/", "tests/")) for n in names)
