"""Rendering many requests with few forward passes: the model cache and the render batcher of the GAN service.

    models = ModelCache(store, size=4, device="cpu")
    batcher = RenderBatcher(max_batch=32, max_wait_s=0.005, max_queue=4096)
    audio = batcher.submit(models.get("run1"), latents[:32]).result()     # [B, T]; from any thread
    batcher.stop()

Replicas keep no state that matters: models are read from the store and cached, and a cached model looks for a newer
checkpoint every MODEL_REFRESH_S. Concurrent Render/Sample calls of one replica go through one `RenderBatcher`: their
latents are gathered into shared forward passes (max batch, max wait), the queue is bounded and a full queue answers
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from smf.common.errors import NotFound, ResourceExhausted
from smf.common.store import Store
from smf.gan.runs import LoadedModel, checkpoint_keys, load_model, resolve_model

log = logging.getLogger("smf.gan")

MODEL_REFRESH_S = 5.0  # how often a cached model checks the store for a newer checkpoint

__all__ = ["MODEL_REFRESH_S", "ModelCache", "RenderBatcher"]


# --- model cache ------------------------------------------------------------------------------------------------------
class ModelCache:
    """Loaded models by (store, run), newest checkpoint, least recently used evicted beyond `size`."""

    def __init__(self, store: Store, *, size: int = 4, device: str = "cpu"):
        self.store, self.size, self.device = store, size, device
        self._models: collections.OrderedDict[tuple[str, str], tuple[LoadedModel, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str) -> LoadedModel:
        store, run_id = resolve_model(self.store, model)
        key = (store.uri, run_id)
        with self._lock:
            cached = self._models.get(key)
            if cached and time.monotonic() - cached[1] < MODEL_REFRESH_S:
                self._models.move_to_end(key)
                return cached[0]
        keys = checkpoint_keys(store, run_id)
        if not keys:
            raise NotFound(f"model {run_id!r} has no checkpoint in {store.uri} (unknown, or not trained yet)")
        if cached and cached[0].checkpoint == keys[-1]:
            loaded = cached[0]
        else:
            loaded = load_model(store, run_id, device=self.device, checkpoint=keys[-1])
            log.info("loaded %s (%s)", run_id, keys[-1])
        with self._lock:
            self._models[key] = (loaded, time.monotonic())
            self._models.move_to_end(key)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return loaded


# --- micro-batching --------------------------------------------------------------------------------------------------
@dataclass
class _Item:
    model: LoadedModel
    latents: torch.Tensor
    future: Future


class RenderBatcher:
    """Renders latents submitted from many threads in shared batches: a worker takes the oldest request, adds
    requests for the same model until `max_batch` latents or `max_wait_s` passed, and runs one forward pass."""

    def __init__(self, *, max_batch: int = 32, max_wait_s: float = 0.005, max_queue: int = 4096):
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued = 0  # latents waiting
        self._cond = threading.Condition()
        self._stopped = False
        self.batches = 0  # forward passes run (for tests and metrics)
        threading.Thread(target=self._work, name="gan-render-batcher", daemon=True).start()

    def submit(self, model: LoadedModel, latents: torch.Tensor) -> Future:
        """Queue at most max_batch latents; the future gives audio [B, T]. ResourceExhausted when the queue is full."""
        assert len(latents) <= self.max_batch
        fut: Future = Future()
        with self._cond:
            if self._queued + len(latents) > self.max_queue:
                raise ResourceExhausted(
                    f"render queue full ({self._queued} latents waiting, limit "
                    f"{self.max_queue}); retry later or add replicas"
                )
            self._queue.append(_Item(model, latents, fut))
            self._queued += len(latents)
            self._cond.notify()
        return fut

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            first = self._queue.popleft()
            batch, n = [first], len(first.latents)
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_batch:
                same = next(
                    (it for it in self._queue if it.model is first.model and n + len(it.latents) <= self.max_batch),
                    None,
                )
                if same is not None:
                    self._queue.remove(same)
                    batch.append(same)
                    n += len(same.latents)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._queued -= n
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                audio = batch[0].model.render(torch.cat([it.latents for it in batch]), batch_size=self.max_batch)
                self.batches += 1
                i = 0
                for it in batch:
                    it.future.set_result(audio[i : i + len(it.latents)])
                    i += len(it.latents)
            except BaseException as exc:  # noqa: BLE001 — handed to the callers, who re-raise it in their threads
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
