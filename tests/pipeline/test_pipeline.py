"""The whole pipeline through the real services (spawned on loopback), at test size (configs/tiny.json).

Checks: every stage ran and wrote committed, verifiable artifacts with lineage; the report has what the issue asks
for; a re-run of a finished pipeline does no work; changing one stage's config re-runs only it and what follows;
a pipeline killed (SIGKILL) mid-stage resumes where it stopped.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from smf.common.lineage import list_artifacts, read_manifest, verify_artifact
from smf.common.store import open_store
from smf.pipeline.config import DEMO_CONFIG, load_config
from smf.pipeline.pipeline import STAGES, Pipeline, read_state
from smf.pipeline.services import local_services

TINY = DEMO_CONFIG.parent / "tiny.json"


def _snapshot(store) -> dict:
    return {k: store.stat(k).sha256 for k in store.list()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    store = open_store(f"file://{root}/store")
    cfg = load_config(TINY)
    logs: list[str] = []
    with local_services(store.uri, log_dir=root / "logs") as svc:
        t0 = time.monotonic()
        first = Pipeline(cfg, store, svc, log=logs.append).run()
        first_s = time.monotonic() - t0
        before = _snapshot(store)
        t0 = time.monotonic()
        again = Pipeline(cfg, store, svc, log=logs.append).run()
        again_s = time.monotonic() - t0
        after = _snapshot(store)
        cfg2 = load_config(TINY)
        cfg2.gestures[0]["duration"] = 0.4
        changed = Pipeline(cfg2, store, svc, log=logs.append).run()
    return {
        "store": store,
        "cfg": cfg,
        "first": first,
        "again": again,
        "changed": changed,
        "before": before,
        "after": after,
        "first_s": first_s,
        "again_s": again_s,
        "logs": logs,
        "root": root,
    }


def test_every_stage_ran_and_its_artifacts_verify(run):
    state, store = run["first"], run["store"]
    assert state["status"] == "succeeded" and state["ran"] == list(STAGES)
    for name in STAGES:
        rec = state["stages"][name]
        assert rec["state"] == "done" and len(rec["key"]) == 64
        for aid in rec["outputs"]["artifacts"]:
            verify_artifact(store, aid)
    for aid in list_artifacts(store):
        verify_artifact(store, aid)


def test_lineage_links_the_stages(run):
    st, store = run["first"]["stages"], run["store"]
    out = {n: st[n]["outputs"] for n in STAGES}
    assert out["gan"]["model"] in read_manifest(store, out["samples"]["samples"]).inputs
    assert out["dataset"]["dataset"] in read_manifest(store, out["gan"]["model"]).inputs
    assert out["grid"]["grid"] in read_manifest(store, out["som"]["som"]).inputs
    rnn_cfg = json.loads(store.get_bytes(f"{out['rnn']['model']}/config.json"))
    # two tiers: the parameter tier makes rms, centroid from the knobs; the audio tier renders them and, with
    # `knobs: true`, hears the knobs beside them
    assert rnn_cfg["data"] == out["rnn"]["data"] and rnn_cfg["props"] == ["rms", "centroid", "dim0", "dim1"]
    ctl_cfg = json.loads(store.get_bytes(f"{out['rnn']['chain']}/config.json"))
    assert ctl_cfg["props"] == ["dim0", "dim1"] and ctl_cfg["generate"] == ["rms", "centroid"]
    assert read_manifest(store, out["rnn"]["chain"]).inputs == [out["som_render"]["grid"]]
    # the RNN trains on the linearized grid directly (no copy into a dataset) and names it as its input
    assert out["rnn"]["data"] == out["som_render"]["grid"]
    assert read_manifest(store, out["som_render"]["grid"]).kind == "som-grid"
    assert read_manifest(store, out["rnn"]["model"]).inputs == [out["som_render"]["grid"]]
    assert [a for a in list_artifacts(store, "datasets") if "-lin-" in a] == []
    corners = json.loads(store.get_bytes(f"{out['corners']['artifact']}/corners.json"))
    assert len(set(corners["indices"])) == 4


def test_report_has_the_sections(run):
    store, state = run["store"], run["first"]
    page = store.get_bytes(state["report"]).decode()
    assert state["report"] == "pipelines/tiny/report.html"
    for needle in (
        "GAN losses",
        "RNN loss",
        "raw grid",
        "linearized grid",
        "SOM evenness",
        "Lineage",
        "MR-STFT",
        "Fréchet",
        "Knobs: control-following",
        "oracle ρ",
        "data:audio/wav;base64,",
        "<svg",
        "data:image/png;base64,",
    ):
        assert needle in page, needle
    n_players = page.count("<audio")
    assert n_players >= 8 + 9 + 9 + 1  # samples, raw + linearized cells, one render
    scores = state["stages"]["report"]["outputs"]["scores"]["sets"]
    for name in ("gan_samples", "rnn_renders", "data_half_b"):
        assert scores[name]["mrstft"] >= 0 and scores[name]["frechet"] >= 0
    control = state["stages"]["report"]["outputs"]["scores"]["control"]["summary"]
    assert {r["param"] for r in control["rows"]} == {"dim0", "dim1"}
    assert all(r["oracle"] > 0.5 for r in control["rows"])  # the grid's own cells along the path are heard there
    assert control["voices"] == 4 and "the mean over 4 renders of each gesture" in page  # the default voices


def test_rerun_of_a_finished_pipeline_does_no_work(run):
    again = run["again"]
    assert again["ran"] == [] and again["skipped"] == list(STAGES)
    changed = {k for k in set(run["before"]) | set(run["after"]) if run["before"].get(k) != run["after"].get(k)}
    assert changed <= {"pipelines/tiny/state.json"}, changed
    assert run["again_s"] < 5


def test_a_changed_stage_reruns_only_itself_and_what_follows(run):
    assert run["changed"]["ran"] == ["renders", "report"]
    assert run["changed"]["skipped"] == [s for s in STAGES if s not in ("renders", "report")]  # control: no gestures


def test_status_command(run, capsys):
    from smf.cli import main

    assert main(["pipeline", "status", "tiny", "--store", run["store"].uri]) == 0
    out = capsys.readouterr().out
    assert "pipeline tiny: succeeded" in out and "som_render" in out and "report.html" in out


def test_killed_mid_stage_resumes(tmp_path):
    """SIGKILL the `smf pipeline run` process while the GAN trains; the re-run skips the dataset and continues the
    same GAN run from its checkpoint (the services it had spawned die with it)."""
    uri = f"file://{tmp_path}/store"
    store = open_store(uri)
    cmd = [
        sys.executable,
        "-m",
        "smf.cli",
        "pipeline",
        "run",
        str(TINY),
        "--store",
        uri,
        "--logs",
        str(tmp_path / "logs1"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            gan = read_state(store, "tiny")["stages"].get("gan")
            if gan and [k for k in store.list("gan") if "/ckpt/" in k]:
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the GAN never wrote a checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = read_state(store, "tiny")
    assert state["stages"]["gan"]["state"] == "running"
    time.sleep(3)  # the services get SIGTERM through PR_SET_PDEATHSIG; let them (and their trainer) stop
    out = subprocess.run(cmd[:-1] + [str(tmp_path / "logs2")], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    state = read_state(store, "tiny")
    assert state["status"] == "succeeded"
    assert "dataset" in state["skipped"] and "gan" in state["ran"]
    logs = "".join(Path(p).read_text() for p in glob.glob(str(tmp_path / "logs2" / "jobs" / "*" / "log.txt")))
    assert "resumed gan/tiny-" in logs, logs[-2000:]
    assert os.path.exists(tmp_path / "store" / "pipelines" / "tiny" / "report.html")
