"""RnnService (smf.rnn.v1): train MTCRNN models as jobs, generate audio from conditioning arrays, play them live.

    SMF_TOKEN=secret smf serve rnn --port 50054 --store s3://smf/store

A thin servicer over pure functions: training is `python -m smf.rnn.train` launched through smf.common.jobs and
followed through the run's progress.json (so local and Kubernetes jobs look the same); generation is
smf.rnn.generate; conditioning arrays are checked by smf.rnn.conditioning (INVALID_ARGUMENT naming the expected
params). The server base (smf.common.server) supplies auth, health, metrics, error mapping and shutdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import threading
import time

import numpy as np
import torch
from smf.common import jobs, lineage, refs
from smf.common.commit import start_sweeper
from smf.common.errors import InvalidArgument, ResourceExhausted
from smf.common.limits import check_range, parse_json
from smf.common.operations import OPERATION_SERVICE_NAME, OperationRegistry, with_operations
from smf.common.store import Store, open_store
from smf.common.v1 import common_pb2
from smf.rnn import conditioning as cond
from smf.rnn.fastgen.quant import PRECISIONS
from smf.rnn.live import DEFAULT_VOICE_BUDGET, LiveVoice, voice_budget
from smf.rnn.runs import (
    ModelCache,
    export_run,
    launch_training,
    list_runs,
    prepare_run,
    read_progress,
    resolve_run,
    run_ids,
)
from smf.rnn.v1 import rnn_pb2, rnn_pb2_grpc

log = logging.getLogger("smf.rnn")

SERVICE_NAME = "smf.rnn.v1.RnnService"
DEFAULT_PORT = 50054
MAX_VOICES = 64
MAX_SECONDS = 600.0
MAX_INLINE_VALUES = 1 << 20  # 4 MiB of float32: bigger arrays go through the store
CHUNK_BYTES = 1 << 20  # streamed audio chunks stay well below the 4 MiB message limit
# Upper bounds of what a training request may ask (lower bounds are TrainConfig's): an SMF-size model is H256/L4,
# batch 32 x 512 steps; these leave room for far bigger runs and refuse a typo that would fill the job's memory.
MAX_TRAIN = {
    "hidden": 4096,
    "layers": 16,
    "classes": 65536,
    "sample_rate": 192000,
    "seq_len": 65536,
    "batch": 4096,
    "steps": 10_000_000,
    "checkpoint_every": 10_000_000,
    "progress_every": 10_000_000,
    "keep_checkpoints": 1000,
}
MAX_WINDOW_STEPS = 1 << 21  # batch x seq_len: time steps of one training step (SMF runs: 16 384)


class RnnServicer(rnn_pb2_grpc.RnnServiceServicer):
    def __init__(
        self,
        store: Store,
        registry: OperationRegistry | None = None,
        *,
        job_backend=None,
        job_env: dict[str, str] | None = None,
        train_gpus: int = 0,
        device: str = "cpu",
        cache_size: int = 4,
        precision: str = "fp32",
        confine: refs.Confinement | None = None,
        max_voices: int = DEFAULT_VOICE_BUDGET,
    ):
        self.store = store
        # live Play streams at once: each holds a generator busy in real time (a core per SMF-size voice)
        self.max_voices = max_voices
        self.voices = threading.BoundedSemaphore(max_voices)
        # the stores and local data roots a request may name (default: this store only, no folder)
        self.confine = confine or refs.Confinement()
        self.registry = registry or OperationRegistry()
        self.job_backend = job_backend
        self.job_env = dict(job_env or {})
        self.train_gpus = train_gpus  # GPUs a training job asks its backend for (Kubernetes resources.limits)
        # precision of the compiled generation loop: int8 makes one SMF-size voice real time
        self.models = ModelCache(store, device=device, precision=precision, size=cache_size)

    # -- models --------------------------------------------------------------------------------------------

    def ListModels(self, request, context):
        models = [
            rnn_pb2.ModelInfo(
                ref=common_pb2.ArtifactRef(uri=r.uri, id=r.run_id, kind="rnn"),
                param_names=r.param_names,
                steps=r.steps,
                sample_rate=r.sample_rate,
                hidden=r.hidden,
                layers=r.layers,
                state=r.state,
                loss=r.loss,
            )
            for r in list_runs(self.store)
        ]
        return rnn_pb2.ListModelsResponse(models=models)

    def ready(self) -> None:
        """Health is SERVING once the store answers and the models can be listed."""
        run_ids(self.store)

    # -- training ------------------------------------------------------------------------------------------

    def StartTraining(self, request, context):
        fields = _train_fields(request)
        _check_sizes(fields)
        if "data" in fields:
            fields["data"] = self._data(fields["data"])
        cfg, run_id = prepare_run(fields, request.run_id)
        job = launch_training(self.store, cfg, run_id, env=self.job_env, gpus=self.train_gpus, backend=self.job_backend)
        started = time.time()
        op = self.registry.start_external(
            "rnn.train",
            lambda: jobs.poll_job(job, lambda: read_progress(self.store, run_id, since=started)),
            interval=1.0,
            on_cancel=job.cancel,
            metadata={"run": run_id, "job": job.id},
        )
        return rnn_pb2.StartTrainingResponse(operation=op)

    def _data(self, raw) -> str:
        """The training data as the trainer is to read it; URIs and folders outside what this server may read are
        PERMISSION_DENIED. A store id that is also a folder under this process's working directory is handed on as
        its store URI: the trainer looks for a folder first, and the request meant the store."""
        data = refs.check_data(self.store, raw, field="data", confine=self.confine)
        if not refs.is_uri(data) and not refs.is_local_path(data) and os.path.isdir(data):
            return self.store.key_uri(refs.artifact_id(data, "datasets", field="data", any_kind=True))
        return data

    # -- generation ----------------------------------------------------------------------------------------

    def _conditioning(self, request, names: list[str]) -> np.ndarray:
        which = request.WhichOneof("conditioning")
        if which == "conditioning_uri":
            uri = request.conditioning_uri
            store, key = refs.resolve_key(self.store, uri, field="conditioning_uri", allowed=list(self.confine.stores))
            arr = cond.load_array(store.get_bytes(key), field="conditioning_uri")
        elif which == "array":
            a = request.array
            n = a.batch * a.points * a.columns
            if len(a.values) > MAX_INLINE_VALUES:
                raise InvalidArgument(
                    "array",
                    f"{len(a.values)} values inline; send arrays above {MAX_INLINE_VALUES} values as a store URI",
                )
            if a.batch < 1 or a.points < 1 or a.columns < 0 or n != len(a.values):
                raise InvalidArgument(
                    "array",
                    f"batch*points*columns = {a.batch}*{a.points}*{a.columns} does "
                    f"not match {len(a.values)} values; expected columns {names}",
                )
            arr = np.asarray(a.values, dtype=np.float32).reshape(a.batch, a.points, a.columns)
        else:
            raise InvalidArgument("conditioning", f"give conditioning_uri or array (columns {names})")
        return cond.check_array(arr, names, field="conditioning")

    def Generate(self, request, context):
        from smf.common.audio import wav_bytes

        loaded = self.models.load(request.model, request.step)
        chain = self.models.load(request.chain_model, request.chain_step) if request.chain_model else None
        if chain is not None and chain.config.is_audio:
            raise InvalidArgument("chain_model", f"{chain.run_id} is an audio tier; give a parameter tier")
        names = (chain or loaded).config.param_names  # chained: the conditioning holds the parameter tier's params
        arr = self._conditioning(request, names)
        if not 0 < request.duration <= MAX_SECONDS:
            raise InvalidArgument("duration", f"must be in (0, {MAX_SECONDS}] seconds, got {request.duration}")
        voices = request.voices or arr.shape[0]
        if arr.shape[0] == 1 and voices > 1:
            arr = np.repeat(arr, voices, axis=0)
        if voices != arr.shape[0]:
            raise InvalidArgument(
                "voices", f"is {voices} but the array has {arr.shape[0]} voices (use 1 or {arr.shape[0]})"
            )
        if voices > MAX_VOICES:
            raise InvalidArgument("voices", f"at most {MAX_VOICES} voices per request, got {voices}")
        seed = request.seed if request.HasField("seed") else None
        t0 = time.monotonic()
        controls = None
        if chain is not None:
            from smf.rnn.generate import generate_chain

            audio, controls = generate_chain(
                chain.model, loaded.generator, arr, request.duration, seed=seed, temperature=request.temperature or 1.0
            )
        else:
            audio = loaded.generator.generate(
                arr, request.duration, temperature=request.temperature or 1.0, seed=seed
            )  # float32 [B, T]
        taken = time.monotonic() - t0
        sr = loaded.config.sample_rate
        if request.stream_audio:
            interleaved = np.ascontiguousarray(audio.T)  # [T, B]: voices as channels
            frames = max(1, CHUNK_BYTES // (4 * voices))
            for seq, start in enumerate(range(0, len(interleaved), frames)):
                part = interleaved[start : start + frames]
                yield rnn_pb2.GenerateResponse(
                    chunk=common_pb2.AudioChunk(
                        data=part.astype("<f4").tobytes(),
                        encoding=common_pb2.AUDIO_ENCODING_PCM_F32LE,
                        sample_rate=sr,
                        channels=voices,
                        sequence=seq,
                        offset=start,
                        last=start + frames >= len(interleaved),
                    )
                )
        render_id = lineage.new_id("renders/")
        files = {f"voice-{i}.wav": wav_bytes(torch.from_numpy(audio[i]), sr) for i in range(voices)}
        # the conditioning actually used, at the array's own resolution plus the duration it was played over
        files["conditioning.npy"] = cond.array_bytes(arr)
        if controls is not None:  # what the parameter tier generated, at its rate
            files["controls.npy"] = cond.array_bytes(controls)
        lineage.write_artifact(
            self.store,
            "render",
            render_id,
            files,
            service="rnn",
            config={
                "model": loaded.run_id,
                "step": loaded.step,
                "duration": request.duration,
                "temperature": request.temperature or 1.0,
                "seed": seed,
                "voices": voices,
                "param_names": names,
                "sample_rate": sr,
                **(
                    {"chain_model": chain.run_id, "chain_step": chain.step, "controls": chain.config.generate}
                    if chain
                    else {}
                ),
            },
            inputs=[loaded.run_id] + ([chain.run_id] if chain else []),
        )
        yield rnn_pb2.GenerateResponse(
            result=rnn_pb2.GenerateResult(
                render=common_pb2.ArtifactRef(uri=self.store.key_uri(render_id), id=render_id, kind="render"),
                wav_uris=[self.store.key_uri(f"{render_id}/voice-{i}.wav") for i in range(voices)],
                conditioning_uri=self.store.key_uri(f"{render_id}/conditioning.npy"),
                samples=audio.shape[1],
                voices=voices,
                seconds_taken=taken,
            )
        )

    # -- live ----------------------------------------------------------------------------------------------

    def Play(self, request_iterator, context):
        if not self.voices.acquire(blocking=False):
            raise ResourceExhausted(
                f"all {self.max_voices} live voices of this server are playing; try again when one ends "
                "(the operator sets the budget with --max-voices or $SMF_MAX_VOICES)"
            )
        try:
            yield from self._play(request_iterator)
        finally:
            self.voices.release()

    def _play(self, request_iterator):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("message") != "start":
            raise InvalidArgument("start", "the first message of a Play stream must be a PlayStart")
        start = first.start
        loaded = self.models.load(start.model, start.step)
        chain = self.models.load(start.chain_model, start.chain_step).model if start.chain_model else None
        if chain is not None:
            from smf.rnn.generate import chain_columns

            try:
                chain_columns(chain.config, loaded.config)
            except InvalidArgument as exc:
                raise InvalidArgument("start.chain_model", exc.message) from None
        names = list(chain.config.param_names) if chain is not None else loaded.config.param_names
        values = list(start.values) if start.values else [0.5] * len(names)
        cond.check_array(np.asarray([values]), names, field="start.values")
        sr = loaded.config.sample_rate
        chunk = start.chunk_samples or sr // 10
        if not 16 <= chunk <= sr * 2:
            raise InvalidArgument("start.chunk_samples", f"must be in [16, {sr * 2}], got {chunk}")
        max_ahead = (start.max_ahead_ms or 300) / 1000
        voice = LiveVoice(
            loaded.generator,
            values,
            temperature=start.temperature or 1.0,
            seed=start.seed if start.HasField("seed") else None,
            chain=chain,
        )
        updates: queue.Queue = queue.Queue()
        closed = threading.Event()

        def read_updates():  # the client may send at any time, independent of our pace
            try:
                for req in request_iterator:
                    if req.WhichOneof("message") == "update":
                        updates.put(req.update)
            except Exception as exc:  # noqa: BLE001 - a cancelled call ends the iterator with an error
                log.debug("play: request stream ended: %s", exc)
            finally:
                closed.set()

        threading.Thread(target=read_updates, name="rnn-play-reader", daemon=True).start()
        t0, produced, seq = time.monotonic(), 0, 0
        limit = int(start.max_seconds * sr) if start.max_seconds > 0 else None
        while not closed.is_set() or not updates.empty():
            while not updates.empty():
                u = updates.get_nowait()
                voice.update(u.values, names, sr, glide_ms=u.glide_ms, temperature=u.temperature)
            n = chunk if limit is None else min(chunk, limit - produced)
            audio = voice.next_chunk(n, sr)
            yield rnn_pb2.PlayResponse(
                chunk=common_pb2.AudioChunk(
                    data=audio.astype("<f4").tobytes(),
                    sample_rate=sr,
                    channels=1,
                    encoding=common_pb2.AUDIO_ENCODING_PCM_F32LE,
                    sequence=seq,
                    offset=produced,
                    last=limit is not None and produced + n >= limit,
                ),
                values=voice.values.tolist(),
            )
            produced += n
            seq += 1
            if limit is not None and produced >= limit:
                return
            # stay at most max_ahead in front of real time, so a knob change is heard within that bound
            ahead = produced / sr - (time.monotonic() - t0)
            if ahead > max_ahead:
                closed.wait(ahead - max_ahead)

    # -- export --------------------------------------------------------------------------------------------

    def Export(self, request, context):
        loaded = self.models.load(request.model, request.step)
        store, run_id = resolve_run(self.store, request.model)
        uri = export_run(store, run_id, loaded)
        return rnn_pb2.ExportResponse(
            artifact=common_pb2.ArtifactRef(uri=store.key_uri(run_id), id=run_id, kind="rnn"), uri=uri
        )

    def close(self) -> None:
        self.registry.cancel_all()


def _train_fields(request) -> dict:
    """TrainConfig fields of a StartTrainingRequest: config_json, then the options set, data and props."""
    fields: dict = {}
    if request.config_json:
        given = parse_json(request.config_json, field="config_json")
        if not isinstance(given, dict):
            raise InvalidArgument("config_json", "must be a JSON object of training options")
        fields.update(given)
    o = request.options
    for name in ("hidden", "layers", "seq_len", "batch", "steps", "checkpoint_every", "sample_rate", "lr", "seed"):
        if getattr(o, name):
            fields[name] = getattr(o, name)
    if o.tfr:
        fields["tfr"] = max(o.tfr, 0.0)
    if o.HasField("tfr_end"):
        fields["tfr_end"] = o.tfr_end
    if request.data:
        fields["data"] = request.data
    if request.props:
        fields["props"] = list(request.props)
    return fields


def _check_sizes(fields: dict) -> None:
    """INVALID_ARGUMENT naming the field for a size above MAX_TRAIN (or not an integer) and for windows whose
    batch x seq_len exceeds MAX_WINDOW_STEPS."""
    for name, high in MAX_TRAIN.items():
        if name in fields:
            check_range(fields[name], field=name, low=0, high=high, integer=True)
    steps = fields.get("batch", 32) * fields.get("seq_len", 512)
    if steps > MAX_WINDOW_STEPS:
        raise InvalidArgument(
            "batch", f"batch x seq_len = {steps} time steps per training step; at most {MAX_WINDOW_STEPS}"
        )


# --- serving --------------------------------------------------------------------------------------------------


def servicers(servicer: RnnServicer) -> list:
    """(add function, servicer) pairs for the server base: RnnService plus the shared OperationService."""
    return with_operations(rnn_pb2_grpc.add_RnnServiceServicer_to_server, servicer)


SERVICE_NAMES = [SERVICE_NAME, OPERATION_SERVICE_NAME]


def main(argv: list[str] | None = None) -> int:
    from smf.common.server import add_server_arguments, run_server, server_options

    ap = argparse.ArgumentParser(prog="smf serve rnn", description=__doc__.split("\n\n")[0])
    add_server_arguments(ap, default_port=DEFAULT_PORT)
    ap.add_argument("--device", default="auto", help="generation device: auto, cpu, cuda")
    ap.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=os.environ.get("SMF_RNN_PRECISION", "fp32"),
        help="weights/activations of the compiled CPU generation loop (default $SMF_RNN_PRECISION or "
        "fp32; int8 runs one H256/L4 voice ~2.5x faster than real time on one AVX-512 VNNI core)",
    )
    ap.add_argument(
        "--max-voices",
        type=int,
        default=voice_budget(),
        help="live Play streams at once (default $SMF_MAX_VOICES or 8); past it RESOURCE_EXHAUSTED",
    )
    refs.add_confinement_arguments(ap)
    args = ap.parse_args(argv)
    if args.max_voices < 1:
        ap.error(f"--max-voices must be >= 1, got {args.max_voices}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    servicer = RnnServicer(
        open_store(args.store),
        device=device,
        precision=args.precision,
        confine=refs.Confinement.from_args(args),
        max_voices=args.max_voices,
    )
    start_sweeper(servicer.store)  # stale staging and claims of crashed writers (smf.common.commit)
    run_server(name="rnn", servicers=servicers(servicer), service_names=SERVICE_NAMES, **server_options(args))
    return 0
