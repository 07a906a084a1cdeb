"""RnnService (smf.rnn.v1): train MTCRNN models as jobs, generate audio from conditioning arrays, play them live.

    SMF_TOKEN=secret smf serve rnn --port 50054 --store s3://smf/store

A thin servicer over pure functions: training is `python -m smf.rnn.train` launched through smf.common.jobs and
followed through the run's progress.json (so local and Kubernetes jobs look the same); generation is
smf.rnn.generate; conditioning arrays are checked by smf.rnn.conditioning (INVALID_ARGUMENT naming the expected
params). The server base (smf.common.server) supplies auth, health, metrics, error mapping and shutdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict

import numpy as np
import torch
from smf.common import jobs, lineage
from smf.common.errors import InvalidArgument, NotFound
from smf.common.operations import OPERATION_SERVICE_NAME, OperationRegistry, with_operations
from smf.common.store import Store, open_store, parse_uri
from smf.common.v1 import common_pb2
from smf.rnn import conditioning as cond
from smf.rnn.fastgen.quant import PRECISIONS
from smf.rnn.model import RNNConfig, build_model
from smf.rnn.train import TrainConfig, checkpoint_steps, load_run
from smf.rnn.v1 import rnn_pb2, rnn_pb2_grpc

log = logging.getLogger("smf.rnn")

SERVICE_NAME = "smf.rnn.v1.RnnService"
DEFAULT_PORT = 50054
MAX_VOICES = 64
MAX_SECONDS = 600.0
MAX_INLINE_VALUES = 1 << 20  # 4 MiB of float32: bigger arrays go through the store
CHUNK_BYTES = 1 << 20  # streamed audio chunks stay well below the 4 MiB message limit


def run_id_of(model: str) -> str:
    """'name', 'rnn/name' or 'rnn/name/' -> 'rnn/name' (the run's artifact id)."""
    m = model.strip().strip("/")
    if not m:
        raise InvalidArgument("model", "is empty; give a run id such as rnn/my-run")
    return m if m.startswith("rnn/") else f"rnn/{m}"


class LoadedModel:
    """A checkpoint in memory plus its generator (built once: the compiled kernel packs the weights)."""

    def __init__(self, run_id: str, step: int, model: torch.nn.Module, config: RNNConfig, precision: str = "fp32"):
        self.run_id, self.step, self.model, self.config = run_id, step, model, config
        self.precision = precision
        self._generator = None
        self._lock = threading.Lock()

    @property
    def generator(self):
        from smf.rnn.generate import Generator

        with self._lock:
            if self._generator is None:
                self._generator = Generator(self.model, precision=self.precision)
            return self._generator


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
    ):
        self.store = store
        self.registry = registry or OperationRegistry()
        self.job_backend = job_backend
        self.job_env = dict(job_env or {})
        self.train_gpus = train_gpus  # GPUs a training job asks its backend for (Kubernetes resources.limits)
        self.device = torch.device(device)
        self.precision = precision  # of the compiled generation loop: int8 makes one SMF-size voice real time
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = cache_size

    # -- models --------------------------------------------------------------------------------------------

    def _store_and_run(self, model: str) -> tuple[Store, str]:
        if "://" in model:
            store_uri, key = parse_uri(model)
            store = self.store if store_uri == self.store.uri else open_store(store_uri)
            return store, run_id_of(key)
        return self.store, run_id_of(model)

    def load(self, model: str, step: int = 0) -> LoadedModel:
        """A run's checkpoint as an eval-mode model (newest when step is 0), cached."""
        store, run_id = self._store_and_run(model)
        steps = checkpoint_steps(store, run_id)
        if not steps:
            raise NotFound(f"model {run_id} has no checkpoints in {store.uri}")
        step = step or steps[-1]
        key = (store.key_uri(run_id), step)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        net, step = load_run(store, run_id, step)
        loaded = LoadedModel(run_id, step, net.to(self.device), net.config, self.precision)
        with self._cache_lock:
            self._cache[key] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return loaded

    def _runs(self) -> list[str]:
        runs = set()
        for key in self.store.list("rnn/"):
            parts = key.split("/")
            if len(parts) >= 4 and parts[2] == "ckpt":
                runs.add("/".join(parts[:2]))
        return sorted(runs)

    def _json(self, key: str) -> dict:
        try:
            return json.loads(self.store.get_bytes(key))
        except NotFound:
            return {}

    def ListModels(self, request, context):
        models = []
        for run_id in self._runs():
            config = self._json(f"{run_id}/config.json")
            progress = self._json(f"{run_id}/progress.json")
            mcfg = config.get("model", {})
            models.append(
                rnn_pb2.ModelInfo(
                    ref=common_pb2.ArtifactRef(uri=self.store.key_uri(run_id), id=run_id, kind="rnn"),
                    param_names=mcfg.get("param_names", config.get("props", [])),
                    steps=checkpoint_steps(self.store, run_id),
                    sample_rate=mcfg.get("sample_rate", 0),
                    hidden=mcfg.get("hidden", 0),
                    layers=mcfg.get("layers", 0),
                    state=progress.get("state", ""),
                    loss=progress.get("loss") or 0.0,
                )
            )
        return rnn_pb2.ListModelsResponse(models=models)

    # -- training ------------------------------------------------------------------------------------------

    def StartTraining(self, request, context):
        fields: dict = {}
        if request.config_json:
            try:
                fields.update(json.loads(request.config_json))
            except json.JSONDecodeError as exc:
                raise InvalidArgument("config_json", f"not valid JSON: {exc}") from None
            if not isinstance(fields, dict):
                raise InvalidArgument("config_json", "must be a JSON object of training options")
        o = request.options
        for name in ("hidden", "layers", "seq_len", "batch", "steps", "checkpoint_every", "sample_rate"):
            if getattr(o, name):
                fields[name] = getattr(o, name)
        if o.lr:
            fields["lr"] = o.lr
        if o.tfr:
            fields["tfr"] = max(o.tfr, 0.0)
        if o.HasField("tfr_end"):
            fields["tfr_end"] = o.tfr_end
        if o.seed:
            fields["seed"] = o.seed
        if request.data:
            fields["data"] = request.data
        if request.props:
            fields["props"] = list(request.props)
        if "data" not in fields:
            raise InvalidArgument("data", "is required: a dataset or grid id (datasets/tones, grids/<id>) or store URI")
        cfg = TrainConfig.from_dict(fields)  # unknown keys and bad values fail here, before a job starts
        run_id = run_id_of(request.run_id) if request.run_id else lineage.new_id("rnn/")
        args = ["--config", json.dumps(cfg.__dict__), "--out", self.store.key_uri(run_id)]
        job = jobs.launch(
            "rnn",
            args,
            name=run_id.split("/", 1)[1][:63].strip("._-") or "rnn",
            env=self.job_env,
            gpus=self.train_gpus,
            backend=self.job_backend,
        )
        progress_key = f"{run_id}/progress.json"
        started = time.time()

        def read_progress():
            p = self._json(progress_key)
            # a progress.json left by an earlier run of the same id says nothing about this job yet
            return p if p.get("updated_at", 0) >= started - 1 else {}

        op = self.registry.start_external(
            "rnn.train",
            lambda: jobs.poll_job(job, read_progress),
            interval=1.0,
            on_cancel=job.cancel,
            metadata={"run": run_id, "job": job.id},
        )
        return rnn_pb2.StartTrainingResponse(operation=op)

    # -- generation ----------------------------------------------------------------------------------------

    def _conditioning(self, request, names: list[str]) -> np.ndarray:
        which = request.WhichOneof("conditioning")
        if which == "conditioning_uri":
            uri = request.conditioning_uri
            store, key = (open_store(parse_uri(uri)[0]), parse_uri(uri)[1]) if "://" in uri else (self.store, uri)
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

        loaded = self.load(request.model, request.step)
        chain = self.load(request.chain_model, request.chain_step) if request.chain_model else None
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
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("message") != "start":
            raise InvalidArgument("start", "the first message of a Play stream must be a PlayStart")
        start = first.start
        loaded = self.load(start.model, start.step)
        names = loaded.config.param_names
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
                voice.update(updates.get_nowait(), names, sr)
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
        from smf.rnn.export import export_to_store

        loaded = self.load(request.model, request.step)
        store, run_id = self._store_and_run(request.model)
        # export from a CPU copy: the archive must load in a plain CPU torch process
        model = build_model(loaded.config)
        model.load_state_dict({k: v.cpu() for k, v in loaded.model.state_dict().items()})
        uri = export_to_store(model.eval(), store, f"{run_id}/export/model.ts")
        return rnn_pb2.ExportResponse(
            artifact=common_pb2.ArtifactRef(uri=store.key_uri(run_id), id=run_id, kind="rnn"), uri=uri
        )


class LiveVoice:
    """One live voice: carries the GRU state and the last class from chunk to chunk; parameter changes glide
    linearly from the current values to the new ones over `glide_ms` starting at the next chunk."""

    def __init__(self, generator, values, *, temperature: float = 1.0, seed: int | None = None):
        self.values = np.asarray(values, dtype=np.float32)
        self.target = self.values.copy()
        self.glide_left = 0  # samples until the target is reached
        self.temperature = temperature
        self.stream = generator.stream(voices=1, temperature=temperature, seed=seed)

    def update(self, update, names: list[str], sample_rate: int) -> None:
        unknown = sorted(set(update.values) - set(names))
        if unknown:
            raise InvalidArgument("update.values", f"unknown params {unknown}; the model's params are {names}")
        for name, v in update.values.items():
            if not 0.0 <= v <= 1.0:
                raise InvalidArgument(f"update.values[{name}]", f"must be in [0, 1], got {v}")
            self.target[names.index(name)] = v
        self.glide_left = int(update.glide_ms * sample_rate / 1000)
        if update.temperature > 0:
            self.temperature = update.temperature
            self.stream.temperature = update.temperature

    def next_chunk(self, n: int, sample_rate: int) -> np.ndarray:
        if self.glide_left > 0:
            k = min(n, self.glide_left)
            w = (np.arange(1, n + 1, dtype=np.float32) / self.glide_left).clip(max=1.0)[:, None]
            c = self.values[None] + (self.target - self.values)[None] * w
            self.values = c[-1].copy() if k < self.glide_left else self.target.copy()
            self.glide_left -= k
        else:
            self.values = self.target.copy()
            c = np.repeat(self.values[None], n, axis=0)
        return np.asarray(self.stream.next(c[None]), dtype=np.float32)[0]


# --- serving --------------------------------------------------------------------------------------------------


def servicers(store: Store, **kw) -> tuple[list, RnnServicer]:
    """The (add_fn, servicer) pairs of this service, for start_server/run_server and tests."""
    rnn = RnnServicer(store, **kw)
    return with_operations(rnn_pb2_grpc.add_RnnServiceServicer_to_server, rnn), rnn


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
    args = ap.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pairs, rnn = servicers(open_store(args.store), device=device, precision=args.precision)
    run_server(
        name="rnn",
        servicers=pairs,
        service_names=[SERVICE_NAME, OPERATION_SERVICE_NAME],
        on_stop=[rnn.registry.cancel_all],
        **server_options(args),
    )
    return 0
