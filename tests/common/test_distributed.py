"""smf.common.distributed: sharding, the single-process defaults, the read-only store of ranks > 0, and real
collectives in two gloo processes started by the local job backend's torchrun launch."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
import torch
from smf.common import jobs
from smf.common.distributed import Dist, ReadOnlyStore, init, unwrap
from smf.common.errors import InvalidArgument
from smf.common.store import open_store


@pytest.mark.parametrize("world,batch", [(1, 5), (2, 8), (3, 12), (4, 16)])
def test_shards_partition_the_global_batch(world, batch):
    """The union of the ranks' shards is the global batch one process draws, each row once, equal sizes."""
    global_batch = torch.randperm(100, generator=torch.Generator().manual_seed(world))[:batch]
    shards = [Dist(rank=r, world_size=world).shard(global_batch) for r in range(world)]
    assert {len(s) for s in shards} == {batch // world}
    assert sorted(torch.cat(shards).tolist()) == sorted(global_batch.tolist())
    # strided: interleaving the shards gives back the global order
    assert torch.equal(torch.stack(shards, dim=1).flatten(), global_batch)


def test_uneven_global_batch_is_an_error_naming_the_field():
    with pytest.raises(InvalidArgument) as exc:
        Dist(rank=0, world_size=3).local_batch(8, "modelConfig.miniBatchSize[0]")
    assert exc.value.field == "modelConfig.miniBatchSize[0]" and "multiple of 3" in exc.value.message
    with pytest.raises(InvalidArgument):
        Dist(rank=1, world_size=3).shard(torch.zeros(8))


def test_one_process_is_the_default_and_everything_is_a_no_op(tmp_path):
    d = init("cpu", env={})
    assert d == Dist() and not d.enabled and d.is_main and d.backend is None
    x = torch.arange(6.0)
    assert d.shard(x) is x and d.mean(x) is x and d.any(True) and not d.any(False)
    module = torch.nn.Linear(2, 2)
    assert d.wrap(module) is module and unwrap(module) is module
    store = open_store(f"file://{tmp_path}")
    assert d.store(store) is store
    d.barrier()
    d.close()


def test_a_multi_process_env_without_torchrun_is_an_error():
    with pytest.raises(InvalidArgument) as exc:
        init("cpu", env={"WORLD_SIZE": "2"})
    assert exc.value.field == "WORLD_SIZE" and "torchrun" in exc.value.message and "RANK" in exc.value.message


def test_ranks_other_than_0_get_a_read_only_store(tmp_path):
    store = open_store(f"file://{tmp_path}")
    store.put_bytes("gan/run/config.json", b"{}")
    view = Dist(rank=1, world_size=2).store(store)
    assert isinstance(view, ReadOnlyStore) and view.uri == store.uri
    assert view.get_bytes("gan/run/config.json") == b"{}" and view.list("gan") == ["gan/run/config.json"]
    assert view.exists("gan/run/config.json") and view.key_uri("gan/x") == store.key_uri("gan/x")
    for write in (
        lambda: view.put_bytes("gan/run/progress.json", b"{}"),
        lambda: view.delete("gan/run/config.json"),
        lambda: view.put_file("gan/run/a", tmp_path / "x"),
        lambda: view.delete_prefix("gan/run"),
    ):
        with pytest.raises(RuntimeError, match="rank 1 tried to write .*only rank 0 writes"):
            write()
    assert store.list("gan") == ["gan/run/config.json"]


def test_local_command_uses_torchrun_for_several_processes():
    def spec(gpus=0, **options):
        return jobs.JobSpec(
            name="r", kind="gan", module="smf.gan.train", args=["--config", "c"], gpus=gpus, options=options
        )

    assert jobs.local_command(spec()) == [sys.executable, "-m", "smf.gan.train", "--config", "c"]
    assert jobs.local_command(spec(gpus=1, image="ignored:1")) == [
        sys.executable,
        "-m",
        "smf.gan.train",
        "--config",
        "c",
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert jobs.local_command(spec(gpus=4)) == [*torchrun, "--nproc-per-node=4", "-m", "smf.gan.train", "--config", "c"]
    assert jobs.local_command(spec(nproc=2))[:6] == [*torchrun, "--nproc-per-node=2", "-m"]
    for bad in (0, "2", True):
        with pytest.raises(InvalidArgument) as exc:
            jobs.local_command(spec(nproc=bad))
        assert exc.value.field == "nproc"


CHECK = textwrap.dedent('''
    """Run by torchrun (2 processes): what a trainer relies on, checked on real gloo collectives."""
    import json, os, sys
    import torch
    from smf.common.distributed import init, unwrap

    torch.set_num_threads(1)
    d = init("cpu")
    out = {"rank": d.rank, "world": d.world_size, "local_rank": d.local_rank, "backend": d.backend,
           "main": d.is_main, "env": {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}}
    out["mean"] = d.mean(torch.tensor([1.0 + d.rank, 10.0 * d.rank])).tolist()
    out["any_rank1"] = d.any(d.rank == 1)
    out["any_none"] = d.any(False)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)   # the global batch, same on every rank
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    ddp = d.wrap(net)
    torch.nn.functional.mse_loss(ddp(d.shard(x)), d.shard(y)).backward()     # DDP averages the shards' gradients
    torch.manual_seed(0)
    ref = torch.nn.Linear(3, 1)
    torch.nn.functional.mse_loss(ref(x), y).backward()                      # one process, the global batch
    out["grad_err"] = max((a.grad - b.grad).abs().max().item() for a, b in zip(net.parameters(), ref.parameters()))
    out["unwrapped"] = unwrap(ddp) is net
    d.barrier()
    with open(os.path.join(sys.argv[1], f"rank-{d.rank}.json"), "w") as f:
        json.dump(out, f)
    d.close()
''')


def test_collectives_in_two_processes_launched_by_the_local_job_backend(tmp_path, monkeypatch):
    (tmp_path / "ddp_check.py").write_text(CHECK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    out.mkdir()
    backend = jobs.LocalBackend(tmp_path / "jobs")
    job = jobs.launch("gan", [str(out)], name="ddpcheck", module="ddp_check", nproc=2, backend=backend)
    assert job.wait(timeout=180) == "succeeded", job.logs(tail=40)
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got["rank"] == got["local_rank"] == r and got["world"] == 2 and got["backend"] == "gloo"
        assert got["env"] == {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)}
        assert got["main"] == (r == 0)
        assert got["mean"] == [1.5, 5.0]
        assert got["any_rank1"] is True and got["any_none"] is False
        assert got["grad_err"] < 1e-6 and got["unwrapped"]
