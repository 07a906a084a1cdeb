"""Data-parallel training under `torchrun`: one process per GPU, rank 0 writes, every rank sees the same random draws.

    torchrun --standalone --nproc-per-node 4 -m smf.gan.train --config cfg.json --out s3://smf/team/gan/run1

    dist = distributed.init("auto")                 # reads torchrun's env; a plain `python -m` run is world_size 1
    model = dist.wrap(model)                        # DistributedDataParallel when world_size > 1, else as is
    idx = torch.randint(n, (global_batch,), generator=gen)   # EVERY rank draws the whole global batch ...
    mine = dist.shard(idx)                          # ... and keeps rows rank, rank + W, rank + 2W, ...
    loss_mean = dist.mean(torch.tensor([loss]))     # the global batch's mean, as one process would log it
    if dist.is_main: store.put_bytes(...)           # only rank 0 writes (dist.store() gives the rest a read-only view)
    dist.close()

Why every rank draws the whole global batch from the same generator: the union of the shards is exactly the batch
one process would draw, the generator state stays identical on every rank and independent of the world size, so a
checkpoint written by rank 0 of an N-process run resumes in an M-process run (or one process) on the same data order.
Drawing B indices or B latents costs nothing next to a training step.

Why strided shards (rank::W) rather than contiguous blocks: the GAN's minibatch-stddev layer groups samples
i, i + B/4, i + 2B/4, ... (see smf.gan.model.minibatch_stddev); with strided shards, a local batch that is a multiple of
4 holds whole groups, so the per-rank critic computes exactly what one process computes on the global batch.

Losses are means over the batch and DDP averages gradients over ranks, so with equal local batches the gradient is
the global batch's gradient: the same training, up to float summation order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as torch_dist
from smf.common.errors import InvalidArgument
from smf.common.store import Store
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Dist:
    """This process's place in the job. `Dist()` is the single-process default: every method is then a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # "nccl" | "gloo" once a process group is up, None for one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, progress.json, plots and manifests."""
        return self.rank == 0

    def local_batch(self, global_batch: int, field_name: str = "batch") -> int:
        """The per-rank batch; the global batch must split evenly (else the shards' means would be weighted)."""
        if global_batch % self.world_size:
            raise InvalidArgument(
                field_name,
                f"the global batch {global_batch} does not split evenly over "
                f"{self.world_size} processes; use a multiple of {self.world_size}",
            )
        return global_batch // self.world_size

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch drawn identically on every rank: rows rank, rank + W, rank + 2W, ..."""
        if not self.enabled:
            return x
        self.local_batch(len(x))
        return x[self.rank :: self.world_size].contiguous()

    def wrap(self, module: nn.Module, **ddp_options) -> nn.Module:
        """`module` in DistributedDataParallel (gradients averaged over ranks in backward), or as is for one
        process. The wrapper shares the module's parameters: optimizers, EMA and checkpoints keep using `module`."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None, **ddp_options)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a small tensor of per-rank batch means (= the global batch's mean)."""
        if not self.enabled:
            return values
        buf = values.detach().to(self.device, torch.float64).clone()  # float64: logged losses match one process
        torch_dist.all_reduce(buf, op=torch_dist.ReduceOp.SUM)
        return (buf / self.world_size).to(values.device, values.dtype)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on at least one (a SIGTERM seen by one rank stops all at one step,
        otherwise the others would wait forever in the next all-reduce)."""
        if not self.enabled:
            return flag
        buf = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch_dist.all_reduce(buf, op=torch_dist.ReduceOp.MAX)
        return bool(buf.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def store(self, store: Store) -> Store:
        """The store as this rank may use it: as is on rank 0, read-only elsewhere (a write there is a bug)."""
        return store if self.is_main else ReadOnlyStore(store, self.rank)

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def init(device: str = "auto", env: Mapping[str, str] | None = None) -> Dist:
    """Join the job torchrun started (env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or return the
    single-process Dist when WORLD_SIZE is unset or 1.

    `device` is the trainer's setting: "auto" (CUDA when present), "cuda" or "cpu". With CUDA each process takes the
    GPU of its LOCAL_RANK and the NCCL backend; on CPU the gloo backend."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    cuda = device == "cuda" or device.startswith("cuda:") or (device == "auto" and torch.cuda.is_available())
    if world <= 1:
        return Dist(device=torch.device(device if device.startswith("cuda:") else "cuda" if cuda else "cpu"))
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise InvalidArgument(
            "WORLD_SIZE",
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: start multi-process training with torchrun",
        )
    rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise InvalidArgument(
                "LOCAL_RANK",
                f"process {local_rank} on a node with {torch.cuda.device_count()} GPUs; lower --nproc-per-node",
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world, device_id=dev if cuda else None
        )
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


class ReadOnlyStore(Store):
    """A store view for ranks other than 0: reads pass through, writes raise (they would race with rank 0)."""

    def __init__(self, inner: Store, rank: int):
        self.inner, self.rank, self.uri = inner, rank, inner.uri

    def _refuse(self, key: str):
        raise RuntimeError(f"rank {self.rank} tried to write {key!r} in {self.uri}: only rank 0 writes")

    def put_bytes(self, key, data, *, content_type=None):
        self._refuse(key)

    def put_file(self, key, path, *, content_type=None):
        self._refuse(key)

    def delete(self, key):
        self._refuse(key)

    def delete_prefix(self, prefix):
        self._refuse(prefix)

    def iter_chunks(self, key, chunk_size=1 << 20) -> Iterator[bytes]:
        return self.inner.iter_chunks(key, chunk_size)

    def get_bytes(self, key):
        return self.inner.get_bytes(key)

    def get_file(self, key, path):
        return self.inner.get_file(key, path)

    def stat(self, key):
        return self.inner.stat(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def presigned_url(self, key, expires_s=3600):
        return self.inner.presigned_url(key, expires_s)

    def key_uri(self, key):
        return self.inner.key_uri(key)
