"""`smf grid 2d4pt | open | ls`, here (model loaded from the store) and against the running grid service."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request

import torch
from smf.cli import main
from smf.common.lineage import read_manifest


def _grid_id(out: str) -> str:
    uri = next(line for line in out.splitlines() if line.startswith("grid: ")).split(" ", 1)[1]
    return "grids/" + uri.rsplit("/", 1)[1]


def test_2d4pt_here_with_a_local_corner_file(services, s3_env, tmp_path, capsys):
    store = services.store
    z3 = tmp_path / "z3.pt"
    torch.save(torch.load(io.BytesIO(store.get_bytes(f"{services.corners[3]}.pt"))), z3)
    c = services.corners
    rc = main(
        [
            "grid",
            "2d4pt",
            "--store",
            store.uri,
            "--z0",
            c[0],
            "--z1",
            store.key_uri(f"{c[1]}.pt"),
            "--z2",
            c[2],
            "--z3",
            str(z3),
            "--d0",
            "3",
            "--d1",
            "2",
            "--pm",
            "--slerp",
            "-o",
            str(tmp_path / "cells"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    gid = _grid_id(out)
    manifest = read_manifest(store, gid)
    assert manifest.config["model"] == "gan/tiny" and manifest.config["interpolation"] == "slerp"
    assert manifest.inputs == ["gan/tiny", services.sample_artifact]
    assert manifest.config["corners"][3] == str(z3)
    assert sorted(os.listdir(tmp_path / "cells"))[:2] == ["grid_d1.0_d0.0_v.0.params", "grid_d1.0_d0.0_v.0.wav"]
    assert len(os.listdir(tmp_path / "cells")) == 12

    rc = main(["grid", "ls", "--store", store.uri])
    assert rc == 0 and gid in capsys.readouterr().out


def test_2d4pt_remote_and_open_url(services, s3_env, monkeypatch, capsys):
    monkeypatch.setenv("SMF_TOKEN", services.token)
    c = services.corners
    remote_2d4pt = ["grid", "2d4pt", "--remote", f"127.0.0.1:{services.grid_port}"]
    remote_2d4pt += ["--z0", c[0], "--z1", c[1], "--z2", c[2], "--z3", c[3]]
    rc = main([*remote_2d4pt, "--store", services.store.uri, "--d0", "2", "--d1", "3", "--id", "from-cli"])
    out = capsys.readouterr().out
    assert rc == 0 and _grid_id(out) == "grids/from-cli"
    rc = main(["grid", "ls", "--remote", f"127.0.0.1:{services.grid_port}"])
    assert rc == 0 and "grids/from-cli" in capsys.readouterr().out
    rc = main(["grid", "open", "from-cli", "--url", services.http.url + "/"])
    assert rc == 0 and capsys.readouterr().out.strip() == f"{services.http.url}/grids/from-cli"
    rc = main([*remote_2d4pt, "--d0", "1", "--d1", "3"])
    assert rc == 1 and "d0" in capsys.readouterr().err


def test_open_serves_the_page_here(services, small_grid, s3_env):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smf.cli",
            "grid",
            "open",
            small_grid,
            "--store",
            services.store.uri,
            "--port",
            "0",
            "--no-browser",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("auditioner: http://127.0.0.1:"), line
        url = line.split()[1]
        assert url.endswith(f"/{small_grid}")
        base = url.rsplit("/grids/", 1)[0]
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"app.js" in r.read()
        with urllib.request.urlopen(f"{base}/api/grid?id={small_grid}", timeout=10) as r:
            assert json.loads(r.read())["d1"] == 3
    finally:
        proc.terminate()
        proc.wait(10)
