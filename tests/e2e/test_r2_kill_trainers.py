"""R2: `kill -9` of a GAN trainer and of an RNN trainer mid-run (jobs launched by the real services), then the same
StartTraining again: training continues from the last checkpoint, loses at most one checkpoint interval, and no
checkpoint is torn (every one loads, every read sha256-verified)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time

import pytest
import torch
from smf.common.errors import NotFound, SmfError
from smf.gan.client import GanClient
from smf.pipeline.services import _children, _zombie, local_services
from smf.rnn.client import RnnClient

from .helpers import SLOW, record_figures, tiny_gan_config, wait_for

RESULTS: dict = {}


def _steps(store, run: str) -> list[int]:
    return sorted(int(m.group(1)) for k in store.list(f"{run}/ckpt") if (m := re.search(r"step-(\d+)\.pt$", k)))


def _progress_step(store, run: str) -> int:
    try:
        return int(json.loads(store.get_bytes(f"{run}/progress.json")).get("step") or 0)
    except (NotFound, ValueError):  # not written yet: read again next poll
        return 0


def _check_checkpoints(store, run: str) -> int:
    """Every checkpoint left reads back verified and loads; returns how many."""
    steps = _steps(store, run)
    for s in steps:
        ck = torch.load(io.BytesIO(store.get_bytes(f"{run}/ckpt/step-{s}.pt")), map_location="cpu", weights_only=False)
        assert ck["step"] == s and "model" in ck and "optimizer" in ck
    return len(steps)


def _kill_trainer(svc, service: str, store, run: str, every: int) -> dict:
    """Wait until the trainer has a checkpoint and is past it, then SIGKILL it; returns what it had reached."""
    proc = svc.processes[service]
    wait_for(
        lambda: _steps(store, run) and _progress_step(store, run) > _steps(store, run)[-1],
        240,
        f"{run}: a checkpoint and progress past it",
    )
    trainers = _children(proc.pid)
    assert len(trainers) == 1, trainers
    reached = _progress_step(store, run)
    os.kill(trainers[0], signal.SIGKILL)
    t_kill = time.monotonic()
    wait_for(lambda: _zombie(trainers[0]), 10, "the kill")
    last = _steps(store, run)[-1]
    assert reached - last <= every, (reached, last)
    return {
        "progress_step_at_kill": reached,
        "last_checkpoint": last,
        "steps_lost": reached - last,
        "checkpoint_interval": every,
        "t_kill": t_kill,
    }


def _resumed_from(log_dir, pattern: str) -> int:
    for path in sorted((log_dir / "jobs").glob("*/log.txt"), key=os.path.getmtime, reverse=True):
        m = re.search(pattern, path.read_text())
        if m:
            return int(m.group(1))
    pytest.fail(f"no job log says {pattern!r}")


def test_kill_gan_and_rnn_trainers_then_resume(gan_store, tmp_path):
    store, logs = gan_store, tmp_path / "logs"
    gan_every, rnn_every = 8, 10
    gan_steps = (16, 16, 16, 16) if SLOW else (8, 8, 8, 8)
    with local_services(store.uri, log_dir=logs, names=("gan", "rnn")) as svc:
        gan = GanClient(svc.targets["gan"], token=svc.token)
        rnn = RnnClient(svc.targets["rnn"], token=svc.token)
        # --- GAN ---
        cfg = tiny_gan_config(gan_steps, checkpointEvery=gan_every)
        op = gan.start_training("r2", cfg)
        g = _kill_trainer(svc, "gan", store, "gan/r2", gan_every)
        with pytest.raises(SmfError):
            gan.wait(op.id, timeout=60)  # the operation reports the dead job
        assert _check_checkpoints(store, "gan/r2") >= 1
        op = gan.start_training("r2", cfg)  # same name + config = resume
        gan.wait(op.id, timeout=600)
        g["resume_seconds"] = round(time.monotonic() - g.pop("t_kill"), 1)
        g["resumed_from"] = _resumed_from(logs, r"resumed gan/r2 from \S+ \(step (\d+)/")
        assert g["resumed_from"] == g["last_checkpoint"]
        assert _steps(store, "gan/r2")[-1] == sum(gan_steps)
        g["checkpoints_loaded"] = _check_checkpoints(store, "gan/r2")
        # --- RNN ---
        opts = {
            "hidden": 16,
            "layers": 1,
            "seq_len": 64,
            "batch": 4,
            "steps": 120 if SLOW else 60,
            "checkpoint_every": rnn_every,
            "progress_every": 2,
            "seed": 0,
        }
        op = rnn.start_training("datasets/tones", ["normPitch"], run_id="rnn/r2", **opts)
        r = _kill_trainer(svc, "rnn", store, "rnn/r2", rnn_every)
        with pytest.raises(SmfError):
            rnn.wait(op.id, timeout=60)
        assert _check_checkpoints(store, "rnn/r2") >= 1
        op = rnn.start_training("datasets/tones", ["normPitch"], run_id="rnn/r2", **opts)
        rnn.wait(op.id, timeout=600)
        r["resume_seconds"] = round(time.monotonic() - r.pop("t_kill"), 1)
        r["resumed_from"] = _resumed_from(logs, r"resumed rnn/r2 at step (\d+)")
        assert r["resumed_from"] == r["last_checkpoint"]
        assert _steps(store, "rnn/r2")[-1] == opts["steps"]
        r["checkpoints_loaded"] = _check_checkpoints(store, "rnn/r2")
        gan.close()
        rnn.close()
    record_figures("R2", {"gan": g, "rnn": r})
