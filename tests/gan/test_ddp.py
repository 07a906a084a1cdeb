"""Data-parallel GAN training under torchrun: two gloo CPU processes train exactly like one process with the same
global batch, rank 0 alone writes, and a two-process checkpoint resumes in one process.

Tolerance: the two runs do the same arithmetic except the order of float32 sums (gradients are summed over the
batch within a rank, then over ranks by the all-reduce), which moves results by ~1e-6 (measured: <= 1e-6 on the
losses, 3e-6 on the weights after 8 steps). 1e-4 leaves room for that, while a wrong shard, gradients not averaged
or per-rank random draws change the losses by 1e-2 and more from the first step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from smf.common.distributed import Dist
from smf.common.errors import InvalidArgument
from smf.common.lineage import verify_artifact
from smf.common.training import checkpoint_keys, read_checkpoint
from smf.gan.config import parse_config
from smf.gan.model import minibatch_stddev
from smf.gan.train import Trainer
from support.tiny_gan import tiny_dict

QUIET = {"log": lambda *_: None}
TOL = {"rtol": 1e-4, "atol": 1e-4}


def torchrun(nproc: int, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_processes_train_like_one_and_resume_in_one(tones_store, tmp_path):
    # 8 steps through all four scales (fade-ins included), global batch 8 -> 4 per rank
    cfg = tiny_dict(steps=(2, 2, 2, 2), checkpointEvery=4, logEvery=1)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    ref = Trainer(parse_config(cfg), tones_store, "gan/ddp-ref", **QUIET)
    ref.run()

    # two processes, stopped after 6 of the 8 steps
    run = torchrun(
        2,
        ["-m", "smf.gan.train", "--config", str(path), "--out", tones_store.key_uri("gan/ddp-two"), "--max-steps", "6"],
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("training gan/ddp-two") == 1 and "x 2 processes (gloo)" in run.stdout  # rank 0 speaks
    # Rank 1 holds a read-only store (a write there raises and fails the run), so a clean exit means rank 0 wrote
    # everything; it is all there and consistent:
    assert [k.rsplit("/", 1)[1] for k in checkpoint_keys(tones_store, "gan/ddp-two")] == ["step-4.pt", "step-6.pt"]
    progress = json.loads(tones_store.get_bytes("gan/ddp-two/progress.json"))
    assert progress["state"] == "cancelled" and progress["step"] == 6
    verify_artifact(tones_store, "gan/ddp-two")

    two = read_checkpoint(tones_store, "gan/ddp-two/ckpt/step-6.pt")
    assert two["step"] == 6 and two["metrics"]["step"] == ref.metrics["step"][:6]
    for k in ("loss_d", "loss_g", "wdist", "gp"):
        torch.testing.assert_close(torch.tensor(two["metrics"][k]), torch.tensor(ref.metrics[k][:6]), **TOL)
    # the loop's generator state does not depend on the world size: same as one process's after 6 steps
    six = Trainer(parse_config(cfg), tones_store, "gan/ddp-ref6", **QUIET)
    six.run(max_steps=6)
    assert torch.equal(two["rng"], six.gen.get_state())

    # resume with ONE process (a different world size): the step count goes on and it ends where one process ends
    resumed = Trainer(parse_config(cfg), tones_store, "gan/ddp-two", **QUIET)
    assert resumed.step == 6
    assert resumed.run() == "succeeded" and resumed.step == 8
    for k in ("loss_d", "loss_g", "wdist", "gp"):
        torch.testing.assert_close(torch.tensor(resumed.metrics[k]), torch.tensor(ref.metrics[k]), **TOL)
    a = read_checkpoint(tones_store, checkpoint_keys(tones_store, "gan/ddp-ref")[-1])["model"]
    b = read_checkpoint(tones_store, checkpoint_keys(tones_store, "gan/ddp-two")[-1])["model"]
    # Weights per tensor, by relative norm: Adam moves a weight whose gradient is ~0 (second moment 1e-13 against a
    # median 4e-7, seen on one element of G.blocks.2.0 for some batch draws) by ~lr on float noise alone, so one
    # element may differ by a few lr; a wrong shard or unaveraged gradients move every weight, ~1e-2 of the norm.
    for k in a:
        assert float((b[k] - a[k]).double().norm()) <= 1e-3 * float(a[k].double().norm()) + 1e-4, k


def test_minibatch_stddev_groups_survive_strided_shards():
    """Why shards are strided: a local batch of 4 holds whole groups of the global batch's minibatch-stddev."""
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    whole = minibatch_stddev(x)
    for rank in range(2):
        d = Dist(rank=rank, world_size=2)
        torch.testing.assert_close(minibatch_stddev(d.shard(x)), d.shard(whole))


def test_global_batch_must_split_over_the_processes(tones_store):
    with pytest.raises(InvalidArgument) as exc:
        Trainer(parse_config(tiny_dict()), tones_store, "gan/ddp-uneven", dist=Dist(rank=0, world_size=3), **QUIET)
    assert exc.value.field == "modelConfig.miniBatchSize[0]"
    assert not tones_store.list("gan/ddp-uneven")


def test_cancelling_a_two_process_local_job_checkpoints_once(tones_store, tmp_path):
    """jobs.launch(nproc=2) runs torchrun; cancel's SIGTERM reaches every rank, they stop after the same step
    (else one would wait forever in the next all-reduce) and rank 0 saves the checkpoint the run resumes from."""
    from smf.common import jobs

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(tiny_dict(steps=(200, 200, 200, 200), checkpointEvery=10_000, logEvery=1)))
    job = jobs.launch(
        "gan",
        ["--config", str(path), "--out", tones_store.key_uri("gan/ddp-cancel")],
        name="ddpc",
        nproc=2,
        backend=jobs.LocalBackend(tmp_path / "jobs"),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.status() == "running":
            if (
                tones_store.exists("gan/ddp-cancel/progress.json")
                and json.loads(tones_store.get_bytes("gan/ddp-cancel/progress.json"))["step"] >= 2
            ):
                break
            time.sleep(0.2)
        job.cancel(grace=60)
        assert job.wait(timeout=90) == "failed"  # cancelled = ended, not finished
    finally:
        job.cancel(grace=0)
    progress = json.loads(tones_store.get_bytes("gan/ddp-cancel/progress.json"))
    assert progress["state"] == "cancelled", job.logs(tail=30)
    keys = checkpoint_keys(tones_store, "gan/ddp-cancel")
    assert keys == [f"gan/ddp-cancel/ckpt/step-{progress['step']}.pt"]
    resumed = Trainer(parse_config(json.loads(path.read_text())), tones_store, "gan/ddp-cancel", **QUIET)
    assert resumed.step == progress["step"] >= 2
