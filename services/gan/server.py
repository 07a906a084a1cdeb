"""GanService (smf.gan.v1): training as jobs, random sampling and batched latent rendering over gRPC.

    SMF_TOKEN=secret smf serve gan --port 50051 --store s3://smf/store

A thin servicer: requests become calls of `smf.gan.runs` (submitting a run, listing models), `smf.gan.batching`
(the model cache and the render batcher that gathers concurrent Render/Sample calls into shared forward passes) and
`smf.gan.sample` (latents and sound files). Replicas keep no state that matters, so several of them behind a
balancer or `GanClient` with several targets scale rendering out.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random

import torch
from smf.common import jobs, refs
from smf.common.commit import Staging, start_sweeper
from smf.common.errors import InvalidArgument, NotFound
from smf.common.latents import read_latent
from smf.common.limits import MAX_GPUS, check_gpus, check_range, parse_json
from smf.common.lineage import new_id
from smf.common.operations import OPERATION_SERVICE_NAME, OperationRegistry, with_operations
from smf.common.refs import Confinement, add_confinement_arguments, check_data, resolve_key
from smf.common.server import add_server_arguments, run_server, server_options
from smf.common.store import Store, open_store
from smf.common.v1 import common_pb2
from smf.gan.batching import ModelCache, RenderBatcher
from smf.gan.config import GanConfig, parse_config
from smf.gan.runs import (
    LoadedModel,
    launch_training,
    model_summary,
    prepare_run,
    read_progress,
    run_id_for,
    run_names,
)
from smf.gan.sample import sound_files, sounds_config, validate_latents
from smf.gan.v1 import gan_pb2, gan_pb2_grpc

log = logging.getLogger("smf.gan")

MAX_COUNT = 1024  # sounds per SampleRandom
MAX_LATENTS = 4096  # latents per RenderLatents
CHUNK_SAMPLES = 1 << 17  # samples per AudioChunk: 512 KiB of float32, far below the 4 MiB message limit
# Upper bounds of a config submitted over gRPC (the SMF paper's config: 5 scales, depth <= 128, batch 12, latent 128,
# 512-bin STFT, 300k steps per scale): room for far bigger runs, and a typo cannot fill the trainer's memory.
MAX_SCALES = 12
MAX_CONFIG = {
    "modelConfig.depthScales": 2048,
    "modelConfig.miniBatchSize": 4096,
    "modelConfig.maxIterAtScale": 100_000_000,
    "modelConfig.dimLatentVector": 8192,
    "transformConfig.stft_channels": 16384,
    "transformConfig.n_frames": 8192,
    "trainConfig.previewCount": 1024,
}


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
        confine: Confinement | None = None,
        max_gpus: int = MAX_GPUS,
    ):
        self.store = store
        # the stores and local data roots a request may name (default: this store only, no folder)
        self.confine = confine or Confinement()
        self.max_gpus = max_gpus
        self.registry = registry or OperationRegistry()
        self.models = ModelCache(store, device=device)
        self.batcher = RenderBatcher(max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue)
        self.job_backend = job_backend
        self.jobs: dict[str, jobs.JobHandle] = {}

    # --- training ---
    def StartTraining(self, request, context):
        run_id = run_id_for(request.name)
        cfg = self._config(request)
        # the trainer reads any URI and local path it is given: what a caller may name is decided here, before the job
        for key in ("data_path", "att_dict_path"):
            raw = getattr(cfg.loader, key, None)
            if raw is not None:
                check_data(self.store, raw, field=f"loaderConfig.{key}", confine=self.confine)
        _check_sizes(cfg)
        gpus = check_gpus(request.gpus, max_gpus=self.max_gpus, available=self._gpus_here())
        prepare_run(self.store, run_id, cfg)
        job = launch_training(self.store, run_id, gpus=gpus, backend=self.job_backend)
        op = self.registry.start_external(
            "gan.train",
            lambda: jobs.poll_job(job, lambda: read_progress(self.store, run_id)),
            interval=0.5,
            on_cancel=job.cancel,
            metadata={"run": run_id, "job": job.id},
        )
        self.jobs[op.id] = job
        return gan_pb2.StartTrainingResponse(operation=op)

    def _gpus_here(self) -> int | None:
        """GPUs a local job can use (a local job asking for more starts one CPU worker per GPU); None where a
        cluster backend decides."""
        local = isinstance(jobs.get_backend(self.job_backend), jobs.LocalBackend)
        return torch.cuda.device_count() if local else None

    def _config(self, request) -> GanConfig:
        if request.config_json:
            return parse_config(parse_json(request.config_json, field="config_json"), source="config_json")
        if not request.config_uri:
            raise InvalidArgument("config_json", "give the config as config_json or config_uri")
        store, key = resolve_key(self.store, request.config_uri, field="config_uri", allowed=list(self.confine.stores))
        try:
            raw = store.get_bytes(key)
        except NotFound:
            raise InvalidArgument("config_uri", f"{request.config_uri} does not exist") from None
        return parse_config(parse_json(raw, field="config_uri"), source="config_uri")

    def ListModels(self, request, context):
        out = []
        for name in run_names(self.store):
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
            allowed = list(self.confine.stores)
            rows = [
                read_latent(self.store, u, field=f"latent_uris[{i}]", allowed=allowed)
                for i, u in enumerate(request.latent_uris)
            ]
            latents = validate_latents(rows, model.latent_dim, field="latent_uris")
        else:
            raise InvalidArgument("latents", "give latents inline or as latent_uris")
        # a name inside renders/ ("take1", or "renders/take1"): never a key in another kind's prefix
        output_id = refs.artifact_id(request.output_id, "renders", field="output_id") if request.output_id else ""
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
        """Yields (SampleResult, None) per sound / audio chunk, then (None, ArtifactRef) when stored.

        Stored sounds are staged (`commit.Staging`): they become the artifact only when all are written and the
        manifest is committed. A cancelled call or a passed deadline closes this generator, and leaving the `with`
        drops what was staged, so nothing of a cut render is ever visible.
        """
        to_store = output in (gan_pb2.OUTPUT_UNSPECIFIED, gan_pb2.OUTPUT_STORE, gan_pb2.OUTPUT_BOTH)
        inline = output in (gan_pb2.OUTPUT_INLINE, gan_pb2.OUTPUT_BOTH)
        encoding = encoding or common_pb2.AUDIO_ENCODING_PCM_F32LE
        if not to_store:
            yield from self._sounds(model, latents, inline, encoding, None)
            yield None, None
            return
        # claims the id first: a second writer of it is ALREADY_EXISTS before anything renders
        with Staging(self.store, artifact_id or new_id(f"{kind}/")) as out:
            yield from self._sounds(model, latents, inline, encoding, out)
            out.commit(kind, inputs=[model.run_id], service="gan", config=sounds_config(model, len(latents), config))
            yield None, common_pb2.ArtifactRef(uri=self.store.key_uri(out.id), id=out.id, kind=kind)

    def _sounds(self, model: LoadedModel, latents: torch.Tensor, inline: bool, encoding: int, out: Staging | None):
        """Render in chunks through the batcher; stage `<i>.wav` + `<i>.pt` into `out` (if given); yield results."""
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
            files = sound_files(model, c, audio, start) if out is not None else {}
            for j, (z, a) in enumerate(zip(c, audio, strict=False)):
                i = start + j
                res = gan_pb2.SampleResult(index=i, latent=z.tolist())
                if out is not None:
                    out.put_bytes(f"{i}.wav", files[f"{i}.wav"], content_type="audio/wav")
                    out.put_bytes(f"{i}.pt", files[f"{i}.pt"])
                    res.wav_uri, res.latent_uri = out.key_uri(f"{i}.wav"), out.key_uri(f"{i}.pt")
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

    # --- lifecycle (called by the server base) ---
    def ready(self) -> None:
        """Health is SERVING once the store answers and the models can be listed."""
        run_names(self.store)

    def close(self) -> None:
        self.batcher.stop()
        self.registry.cancel_all()


def _check_sizes(cfg: GanConfig) -> None:
    """INVALID_ARGUMENT naming the key (e.g. `modelConfig.depthScales[2]`) for a size above MAX_CONFIG."""
    sections = {"modelConfig": cfg.model, "transformConfig": cfg.transform, "trainConfig": cfg.train}
    if len(cfg.model.depthScales) > MAX_SCALES:
        raise InvalidArgument(
            "modelConfig.depthScales", f"at most {MAX_SCALES} scales, got {len(cfg.model.depthScales)}"
        )
    for key, high in MAX_CONFIG.items():
        section, name = key.split(".")
        value = getattr(sections[section], name)
        for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            check_range(v, field=key if i is None else f"{key}[{i}]", low=0, high=high, integer=True)


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
    parser.add_argument("--max-gpus", type=int, default=MAX_GPUS, help=f"GPUs one run may ask for (default {MAX_GPUS})")
    add_confinement_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    servicer = GanServicer(
        open_store(args.store),
        max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000,
        max_queue=args.max_queue,
        device=args.device,
        confine=Confinement.from_args(args),
        max_gpus=args.max_gpus,
    )
    start_sweeper(servicer.store)  # stale staging of renders cut by a crash (smf.common.commit)
    run_server(name="gan", servicers=servicers(servicer), service_names=SERVICE_NAMES, **server_options(args))
    return 0


__all__ = ["SERVICE_NAMES", "GanServicer", "ModelCache", "RenderBatcher", "main", "servicers"]
