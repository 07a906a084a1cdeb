"""Data-parallel MTCRNN training under torchrun: two gloo CPU processes train exactly like one process with the
same global batch (teacher forcing 0.8, so free-running samples are included), rank 0 alone writes, and a
two-process run resumes in one process.

Tolerance: the runs differ only in the order of float32 sums (within a rank, then the all-reduce over ranks): ~1e-6
measured. 1e-4 allows for that; a wrong shard, unaveraged gradients or per-rank draws move the loss by >1e-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from smf.common.distributed import Dist
from smf.common.errors import InvalidArgument
from smf.common.lineage import verify_artifact
from smf.common.store import open_store
from smf.datasets import make_dataset
from smf.rnn.train import TrainConfig, checkpoint_steps, load_checkpoint, train

QUIET = {"log": lambda m: None}
TOL = {"rtol": 1e-4, "atol": 1e-4}
CFG = {
    "data": "datasets/tones",
    "props": ["normPitch"],
    "hidden": 16,
    "layers": 1,
    "seq_len": 48,
    "batch": 8,
    "lr": 5e-3,
    "steps": 6,
    "tfr": 0.8,
    "checkpoint_every": 3,
    "progress_every": 3,
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = open_store(f"file://{tmp_path_factory.mktemp('rnn-ddp')}")
    make_dataset("tones", store, n_files=4, duration=0.3)
    return store


def test_two_processes_train_like_one_and_resume_in_one(store, tmp_path):
    longer = TrainConfig.from_dict({**CFG, "steps": 9})
    ref = train(longer, store, "rnn/ddp-ref", **QUIET)
    assert ref["state"] == "succeeded"
    ref_ck = load_checkpoint(store, "rnn/ddp-ref")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "smf.rnn.train",
            "--config",
            json.dumps(CFG),
            "--out",
            store.key_uri("rnn/ddp-two"),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("succeeded at step 6") == 1  # rank 0 alone logs
    # rank 1 holds a read-only store (a write there raises and fails the run): all files come from rank 0
    assert checkpoint_steps(store, "rnn/ddp-two") == [3, 6]
    assert json.loads(store.get_bytes("rnn/ddp-two/progress.json"))["state"] == "succeeded"
    verify_artifact(store, "rnn/ddp-two")

    two = load_checkpoint(store, "rnn/ddp-two")
    torch.testing.assert_close(torch.tensor(two["metrics"]["loss"]), torch.tensor(ref_ck["metrics"]["loss"][:6]), **TOL)

    # resume with ONE process (a different world size) under the 9-step config: continues at step 6 and ends
    # where the straight one-process run ended
    logs = []
    end = train(longer, store, "rnn/ddp-two", log=logs.append)
    assert "resumed rnn/ddp-two at step 6" in logs and end["step"] == 9
    resumed = load_checkpoint(store, "rnn/ddp-two")
    assert resumed["metrics"]["steps"] == ref_ck["metrics"]["steps"]
    torch.testing.assert_close(torch.tensor(resumed["metrics"]["loss"]), torch.tensor(ref_ck["metrics"]["loss"]), **TOL)
    for k, v in ref_ck["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, **TOL)


def test_global_batch_must_split_over_the_processes(store):
    with pytest.raises(InvalidArgument) as exc:
        train(TrainConfig.from_dict(CFG), store, "rnn/ddp-uneven", dist=Dist(rank=0, world_size=3), **QUIET)
    assert exc.value.field == "batch"
    assert not store.list("rnn/ddp-uneven")
