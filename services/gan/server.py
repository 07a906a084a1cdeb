"""GanService (smf.gan.v1): training as jobs, random sampling and batched latent rendering over gRPC.

    SMF_TOKEN=secret smf serve gan --port 50051 --store s3://smf/store

A thin servicer: requests become calls of `smf.gan.sample` / `smf.gan.train` functions. Replicas keep no state that
matters (models are read from the store and cached), so several of them behind a balancer or `GanClient` with
several targets scale rendering out. Inside one replica, concurrent Render/Sample calls go through one
`RenderBatcher`: their latents are gathered into shared forward passes (max batch, max wait), the queue is bounded
and a full queue answers RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import random
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from smf.common import jobs
from smf.common.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from smf.common.lineage import commit_artifact, new_id, read_manifest
from smf.common.operations import (
    OPERATION_SERVICE_NAME,
    OperationRegistry,
    with_operations,
)
from smf.common.server import add_server_arguments, run_server, server_options
from smf.common.store import Store, open_store, parse_uri, validate_prefix
from smf.common.v1 import common_pb2
from smf.gan.config import parse_config
from smf.gan.sample import (
    LoadedModel,
    load_model,
    model_summary,
    read_latent,
    resolve_model,
    sound_files,
    validate_latents,
)
from smf.gan.train import checkpoint_keys
from smf.gan.v1 import gan_pb2, gan_pb2_grpc

log = logging.getLogger("smf.gan")

MAX_COUNT = 1024  # sounds per SampleRandom
MAX_LATENTS = 4096  # latents per RenderLatents
CHUNK_SAMPLES = 1 << 17  # samples per AudioChunk: 512 KiB of float32, far below the 4 MiB message limit
MODEL_REFRESH_S = 5.0
RUN_NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
)  # a store key segment and a job name     # how often a cached model checks the store for a newer checkpoint


# --- model cache -------------------------------------------------------------------------------------------------------
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


# --- the servicer ----------------------------------------------------------------------------------------------------
def _encode(audio: torch.Tensor, encoding: int) -> bytes:
    if encoding == common_pb2.AUDIO_ENCODING_PCM_S16LE:
        return (audio.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().astype("<i2").tobytes()
    return audio.float().numpy().astype("<f4").tobytes()


def _response(cls, result, artifact, **kw):
    if result is not None:
        kw["result"] = result
    if artifact is not None:
        kw["artifact"] = artifact
    return cls(**kw)


class GanServicer(gan_pb2_grpc.GanServiceServicer):
    def __init__(
        self,
        store: Store,
        registry: OperationRegistry | None = None,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 4096,
        device: str = "cpu",
        job_backend: str | None = None,
    ):
        self.store = store
        self.registry = registry or OperationRegistry()
        self.models = ModelCache(store, device=device)
        self.batcher = RenderBatcher(max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue)
        self.job_backend = job_backend
        self.jobs: dict[str, jobs.JobHandle] = {}

    # --- training ---
    def StartTraining(self, request, context):
        name = request.name
        if not RUN_NAME.fullmatch(name or ""):
            raise InvalidArgument("name", f"{name!r} must be 1-63 characters of [A-Za-z0-9._-]")
        if request.config_json:
            cfg = parse_config(request.config_json, source="config_json")
        elif request.config_uri:
            store, key = parse_uri(request.config_uri) if "://" in request.config_uri else (None, request.config_uri)
            try:
                raw = (open_store(store) if store else self.store).get_bytes(key)
            except NotFound:
                raise InvalidArgument("config_uri", f"{request.config_uri} does not exist") from None
            cfg = parse_config(raw, source="config_uri")
        else:
            raise InvalidArgument("config_json", "give the config as config_json or config_uri")
        self._check_data(cfg)
        run_id = f"gan/{name}"
        canonical = json.dumps(cfg.to_dict(), indent=2) + "\n"
        if checkpoint_keys(self.store, run_id):
            try:
                old = json.loads(self.store.get_bytes(f"{run_id}/config.json"))
            except NotFound:
                old = None
            if old != cfg.to_dict():
                raise AlreadyExists(
                    f"model {run_id!r} exists with another config; pick a new name (same config = resume)"
                )
        config_key = f"{run_id}/config.json"
        self.store.put_bytes(config_key, canonical.encode(), content_type="application/json")
        if self.store.exists(f"{run_id}/progress.json"):
            self.store.delete(f"{run_id}/progress.json")  # a finished run's state must not leak into this one
        job = jobs.launch(
            "gan",
            ["--config", self.store.key_uri(config_key), "--out", self.store.key_uri(run_id)],
            name=name,
            gpus=max(request.gpus, 0),
            backend=self.job_backend,
        )

        def read_progress():
            try:
                return json.loads(self.store.get_bytes(f"{run_id}/progress.json"))
            except (NotFound, ValueError):
                return None

        op = self.registry.start_external(
            "gan.train",
            lambda: jobs.poll_job(job, read_progress),
            interval=0.5,
            on_cancel=job.cancel,
            metadata={"run": run_id, "job": job.id},
        )
        self.jobs[op.id] = job
        return gan_pb2.StartTrainingResponse(operation=op)

    def _check_data(self, cfg) -> None:
        path = cfg.loader.data_path
        if "://" in path or path.startswith(("/", ".")):
            return  # another store or a local folder: the trainer checks it
        if not self.store.list(path.strip("/")):
            raise InvalidArgument("loaderConfig.data_path", f"nothing under {path!r} in {self.store.uri}")

    def ListModels(self, request, context):
        runs = sorted({k.split("/")[1] for k in self.store.list("gan") if k.count("/") >= 2})
        out = []
        for name in runs:
            if request.name_prefix and not name.startswith(request.name_prefix):
                continue
            info = model_summary(self.store, f"gan/{name}")
            out.append(
                gan_pb2.Model(
                    name=name,
                    artifact=common_pb2.ArtifactRef(uri=info["uri"], id=info["id"], kind="gan"),
                    step=info["step"],
                    total_steps=info["total"],
                    state=info["state"],
                    latent_dim=info.get("latent_dim", 0),
                    sample_rate=info.get("sample_rate", 0),
                    audio_length=info.get("audio_length", 0),
                    attributes=info.get("attributes", []),
                )
            )
        return gan_pb2.ListModelsResponse(models=out)

    # --- rendering ---
    def SampleRandom(self, request, context):
        if not 1 <= request.count <= MAX_COUNT:
            raise InvalidArgument("count", f"must be in 1..{MAX_COUNT}, got {request.count}")
        model = self.models.get(request.model)
        seed = request.seed if request.HasField("seed") else random.randrange(2**31)
        latents = model.random_latents(request.count, seed)
        for result, artifact in self._render(
            model, latents, request.output, request.encoding, "samples", "", {"seed": seed}
        ):
            yield _response(gan_pb2.SampleRandomResponse, result, artifact, seed=seed if result is None else 0)

    def RenderLatents(self, request, context):
        model = self.models.get(request.model)
        if request.latents:
            if len(request.latents) > MAX_LATENTS:
                raise InvalidArgument("latents", f"at most {MAX_LATENTS} per request, got {len(request.latents)}")
            latents = validate_latents([list(z.values) for z in request.latents], model.latent_dim)
        elif request.latent_uris:
            if len(request.latent_uris) > MAX_LATENTS:
                raise InvalidArgument("latent_uris", f"at most {MAX_LATENTS} per request")
            rows = [read_latent(self.store, u, field=f"latent_uris[{i}]") for i, u in enumerate(request.latent_uris)]
            latents = validate_latents(rows, model.latent_dim, field="latent_uris")
        else:
            raise InvalidArgument("latents", "give latents inline or as latent_uris")
        output_id = request.output_id
        if output_id:
            validate_prefix(output_id)
            try:
                read_manifest(self.store, output_id)
                raise AlreadyExists(f"output_id {output_id!r} already exists")
            except NotFound:
                pass
        for result, artifact in self._render(
            model, latents, request.output, request.encoding, "renders", output_id, {}
        ):
            yield _response(gan_pb2.RenderLatentsResponse, result, artifact)

    def _render(
        self,
        model: LoadedModel,
        latents: torch.Tensor,
        output: int,
        encoding: int,
        kind: str,
        artifact_id: str,
        config: dict,
    ):
        """Yields (SampleResult, None) per sound / audio chunk, then (None, ArtifactRef) when stored."""
        to_store = output in (gan_pb2.OUTPUT_UNSPECIFIED, gan_pb2.OUTPUT_STORE, gan_pb2.OUTPUT_BOTH)
        inline = output in (gan_pb2.OUTPUT_INLINE, gan_pb2.OUTPUT_BOTH)
        encoding = encoding or common_pb2.AUDIO_ENCODING_PCM_F32LE
        aid = artifact_id or new_id(f"{kind}/")
        bs = self.batcher.max_batch
        chunks = [latents[i : i + bs] for i in range(0, len(latents), bs)]
        # Keep a few chunks in flight: the batcher renders chunk k+1 while we write / send chunk k, and one big
        # request cannot fill the whole queue by itself.
        window = 4
        futures = collections.deque(self.batcher.submit(model, c) for c in chunks[:window])
        nxt = len(futures)
        start = 0
        for c in chunks:
            audio = futures.popleft().result()
            if nxt < len(chunks):
                futures.append(self.batcher.submit(model, chunks[nxt]))
                nxt += 1
            files = sound_files(model, c, audio, start) if to_store else {}
            for j, (z, a) in enumerate(zip(c, audio, strict=False)):
                i = start + j
                res = gan_pb2.SampleResult(index=i, latent=z.tolist())
                if to_store:
                    self.store.put_bytes(f"{aid}/{i}.wav", files[f"{i}.wav"], content_type="audio/wav")
                    self.store.put_bytes(f"{aid}/{i}.pt", files[f"{i}.pt"])
                    res.wav_uri, res.latent_uri = (
                        self.store.key_uri(f"{aid}/{i}.wav"),
                        self.store.key_uri(f"{aid}/{i}.pt"),
                    )
                if not inline:
                    yield res, None
                    continue
                for seq, off in enumerate(range(0, len(a), CHUNK_SAMPLES)):
                    piece = a[off : off + CHUNK_SAMPLES]
                    res.audio.CopyFrom(
                        common_pb2.AudioChunk(
                            data=_encode(piece, encoding),
                            encoding=encoding,
                            sample_rate=model.sample_rate,
                            channels=1,
                            sequence=seq,
                            offset=off,
                            last=off + CHUNK_SAMPLES >= len(a),
                        )
                    )
                    yield res, None
                    res = gan_pb2.SampleResult(index=i)
            start += len(c)
        if to_store:
            commit_artifact(
                self.store,
                kind,
                aid,
                inputs=[model.run_id],
                service="gan",
                config={
                    "model": model.run_id,
                    "checkpoint": model.checkpoint,
                    "step": model.step,
                    "sample_rate": model.sample_rate,
                    "count": len(latents),
                    **config,
                },
            )
            yield None, common_pb2.ArtifactRef(uri=self.store.key_uri(aid), id=aid, kind=kind)
        else:
            yield None, None

    def close(self) -> None:
        self.batcher.stop()
        self.registry.cancel_all()


def servicers(servicer: GanServicer) -> list:
    """(add function, servicer) pairs for the server base: GanService plus the shared OperationService."""
    return with_operations(gan_pb2_grpc.add_GanServiceServicer_to_server, servicer)


SERVICE_NAMES = [gan_pb2.DESCRIPTOR.services_by_name["GanService"].full_name, OPERATION_SERVICE_NAME]


def main(argv: list[str] | None = None) -> int:
    """`smf serve gan`."""
    parser = argparse.ArgumentParser(prog="smf serve gan", description=__doc__.splitlines()[0])
    add_server_arguments(parser, default_port=50051)
    parser.add_argument("--max-batch", type=int, default=32, help="latents per forward pass (default 32)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (ms)")
    parser.add_argument("--max-queue", type=int, default=4096, help="latents waiting before RESOURCE_EXHAUSTED")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    servicer = GanServicer(
        open_store(args.store),
        max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000,
        max_queue=args.max_queue,
        device=args.device,
    )
    try:
        run_server(name="gan", servicers=servicers(servicer), service_names=SERVICE_NAMES, **server_options(args))
    finally:
        servicer.close()
    return 0


__all__ = ["SERVICE_NAMES", "GanServicer", "ModelCache", "RenderBatcher", "main", "servicers"]
