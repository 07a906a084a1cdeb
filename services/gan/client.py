"""The public client of the GAN service, for the CLI and other lab tools (grid, SOM).

    gan = GanClient("localhost:50051")                           # token from $SMF_TOKEN
    op = gan.start_training("run1", "services/gan/configs/tiny.json")
    gan.wait(op.id, on_progress=lambda op: print(op.progress.step))
    out = gan.sample_random("run1", 16, seed=0)                  # out.wav_uris, out.latents, out.artifact_uri
    out = gan.render_latents("run1", latents, output="inline")   # out.audio: float32 [B, T]

    gan = GanClient(["10.0.0.5:50051", "10.0.0.6:50051"])       # several replicas: big inline renders are split
                                                                 # over them and run in parallel
Errors come back as `smf.common.errors` (InvalidArgument naming the field, NotFound, ResourceExhausted ...).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
from smf.common.client import call, connect, error_from_rpc, wait_operation
from smf.common.errors import InvalidArgument
from smf.common.refs import is_uri
from smf.common.v1 import common_pb2
from smf.gan.v1 import gan_pb2, gan_pb2_grpc

__all__ = ["GanClient", "Rendered"]

_OUTPUTS = {"store": gan_pb2.OUTPUT_STORE, "inline": gan_pb2.OUTPUT_INLINE, "both": gan_pb2.OUTPUT_BOTH}


@dataclass
class Rendered:
    """What a SampleRandom / RenderLatents call gave back, in latent order."""

    latents: np.ndarray  # [B, latent_dim] float32
    audio: np.ndarray | None = None  # [B, T] float32 (inline output)
    sample_rate: int = 0
    wav_uris: list[str] = field(default_factory=list)  # store output
    latent_uris: list[str] = field(default_factory=list)
    artifact_uris: list[str] = field(default_factory=list)  # one per replica that wrote sounds
    seed: int | None = None

    @property
    def artifact_uri(self) -> str | None:
        return self.artifact_uris[0] if self.artifact_uris else None


class GanClient:
    """Client of one or several GanService replicas (stateless: any replica serves any model)."""

    def __init__(self, targets: str | Sequence[str], *, token: str | None = None, timeout: float = 600.0):
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets:
            raise InvalidArgument("targets", "give at least one host:port")
        self.channels = [connect(t, token=token) for t in targets]
        self.stubs = [gan_pb2_grpc.GanServiceStub(c) for c in self.channels]
        self.timeout = timeout
        self._next = itertools.cycle(range(len(self.stubs)))
        self._lock = threading.Lock()
        self._op_channel: dict[str, grpc.Channel] = {}  # operations live in the replica that started them

    def _pick(self) -> int:
        with self._lock:
            return next(self._next)

    def close(self) -> None:
        for c in self.channels:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- training ---
    def start_training(self, name: str, config: str | os.PathLike | dict, *, gpus: int = 0):
        """Start (or resume) gan/<name>; `config` is a path, a dict or a store URI. Returns the Operation."""
        req = gan_pb2.StartTrainingRequest(name=name, gpus=gpus)
        if isinstance(config, dict):
            req.config_json = json.dumps(config)
        elif isinstance(config, str) and is_uri(config):
            req.config_uri = config
        else:
            with open(config, encoding="utf-8") as f:
                req.config_json = f.read()
        i = self._pick()
        op = call(self.stubs[i].StartTraining, req, timeout=60.0).operation
        self._op_channel[op.id] = self.channels[i]
        return op

    def wait(self, op_id: str, *, on_progress: Callable | None = None, timeout: float | None = None):
        """Follow an operation to its end; returns it or raises the error it failed with."""
        channel = self._op_channel.get(op_id, self.channels[0])
        return wait_operation(channel, op_id, on_progress=on_progress, timeout=timeout)

    def list_models(self, name_prefix: str = "") -> list:
        i = self._pick()
        return list(
            call(self.stubs[i].ListModels, gan_pb2.ListModelsRequest(name_prefix=name_prefix), idempotent=True).models
        )

    # --- rendering ---
    def sample_random(
        self,
        model: str,
        count: int,
        *,
        seed: int | None = None,
        output: str = "store",
        encoding: common_pb2.AudioEncoding = common_pb2.AUDIO_ENCODING_PCM_F32LE,
    ) -> Rendered:
        req = gan_pb2.SampleRandomRequest(model=model, count=count, output=_output(output), encoding=encoding)
        if seed is not None:
            req.seed = seed
        return self._collect(self.stubs[self._pick()].SampleRandom, req, count)

    def render_latents(
        self,
        model: str,
        latents,
        *,
        output: str = "inline",
        encoding: common_pb2.AudioEncoding = common_pb2.AUDIO_ENCODING_PCM_F32LE,
        output_id: str = "",
    ) -> Rendered:
        """Render latents [B, D] (array-like) or a list of latent URIs (str). With several replicas and inline
        output, the latents are split into one contiguous part per replica, rendered in parallel, and rejoined."""
        if len(latents) and isinstance(latents[0], str):
            req = gan_pb2.RenderLatentsRequest(
                model=model, latent_uris=list(latents), output=_output(output), encoding=encoding, output_id=output_id
            )
            return self._collect(self.stubs[self._pick()].RenderLatents, req, len(latents))
        z = np.asarray(latents, dtype=np.float32)
        if z.ndim != 2:
            raise InvalidArgument("latents", f"expected a [B, latent_dim] array, got shape {z.shape}")
        n_parts = 1 if (output != "inline" or output_id) else min(len(self.stubs), len(z))
        parts = np.array_split(np.arange(len(z)), max(n_parts, 1))

        def run(k: int) -> Rendered:
            idx = parts[k]
            req = gan_pb2.RenderLatentsRequest(
                model=model,
                output=_output(output),
                encoding=encoding,
                output_id=output_id,
                latents=[gan_pb2.Latent(values=row) for row in z[idx].tolist()],
            )
            stub = self.stubs[k] if n_parts > 1 else self.stubs[self._pick()]
            return self._collect(stub.RenderLatents, req, len(idx))

        if n_parts <= 1:
            return run(0)
        with ThreadPoolExecutor(n_parts) as pool:
            results = list(pool.map(run, range(n_parts)))
        return Rendered(
            latents=np.concatenate([r.latents for r in results]),
            audio=np.concatenate([r.audio for r in results]),
            sample_rate=results[0].sample_rate,
        )

    def _collect(self, method, request, n: int) -> Rendered:
        latents: list = [None] * n
        chunks: list[list[bytes]] = [[] for _ in range(n)]
        wav, pt = [""] * n, [""] * n
        out = Rendered(latents=np.zeros((0, 0), np.float32))
        encoding = common_pb2.AUDIO_ENCODING_PCM_F32LE
        try:
            for msg in method(request, timeout=self.timeout):
                if msg.HasField("result"):
                    r = msg.result
                    if r.latent:
                        latents[r.index] = np.asarray(r.latent, np.float32)
                    if r.wav_uri:
                        wav[r.index], pt[r.index] = r.wav_uri, r.latent_uri
                    if r.HasField("audio"):
                        chunks[r.index].append(r.audio.data)
                        encoding = r.audio.encoding
                        out.sample_rate = r.audio.sample_rate
                if msg.HasField("artifact"):
                    out.artifact_uris.append(msg.artifact.uri)
                if getattr(msg, "seed", 0) and not msg.HasField("result"):
                    out.seed = msg.seed
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        out.latents = np.stack(latents) if all(x is not None for x in latents) else np.zeros((0, 0), np.float32)
        if any(chunks):
            dtype = "<i2" if encoding == common_pb2.AUDIO_ENCODING_PCM_S16LE else "<f4"
            rows = [np.frombuffer(b"".join(c), dtype=dtype) for c in chunks]
            audio = np.stack(rows).astype(np.float32)
            out.audio = audio / 32767.0 if dtype == "<i2" else audio
        if any(wav):
            out.wav_uris, out.latent_uris = wav, pt
        return out


def _output(name: str) -> gan_pb2.Output:
    if name not in _OUTPUTS:
        raise InvalidArgument("output", f"must be one of {', '.join(_OUTPUTS)}, got {name!r}")
    return _OUTPUTS[name]
