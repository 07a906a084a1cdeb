"""Python client of RnnService — what other lab tools import to train, generate and play remotely.

    from smf.rnn.client import RnnClient
    rnn = RnnClient("localhost:50054")                       # token from $SMF_TOKEN
    op = rnn.start_training("datasets/tones", ["normPitch"], run_id="tones", steps=2000)
    rnn.wait(op.id, on_progress=lambda op: print(op.progress.step, op.progress.loss))
    result, audio = rnn.generate("rnn/tones", arr, duration=3.0, seed=1, stream=True)   # audio [B, T] float32
    for audio, values in rnn.play("rnn/tones", [0.5], updates=q):                       # live
        ...

Errors arrive as smf.common.errors classes (InvalidArgument naming the field, NotFound, ...).
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterable, Iterator

import grpc
import numpy as np
from smf.common.client import ServiceClient, call, error_from_rpc
from smf.rnn.v1 import rnn_pb2, rnn_pb2_grpc

__all__ = ["RnnClient", "chunk_audio"]

# the typed fields of StartTrainingRequest.options; every other option travels in config_json
_OPTION_FIELDS = frozenset(rnn_pb2.TrainingOptions.DESCRIPTOR.fields_by_name)


def chunk_audio(chunk) -> np.ndarray:
    """An AudioChunk's samples as float32 [frames, channels]."""
    if chunk.encoding == 2:  # PCM_S16LE
        a = np.frombuffer(chunk.data, dtype="<i2").astype(np.float32) / 32768.0
    else:
        a = np.frombuffer(chunk.data, dtype="<f4").astype(np.float32)
    return a.reshape(-1, max(chunk.channels, 1))


class RnnClient(ServiceClient):
    stub_class = rnn_pb2_grpc.RnnServiceStub

    def __init__(
        self, target: str | grpc.Channel, *, token: str | None = None, tls: bool | None = None, timeout: float = 30.0
    ):
        super().__init__(target, token=token, tls=tls)
        self.timeout = timeout

    # -- training --
    def start_training(self, data: str, props: list[str], *, run_id: str = "", **options):
        """Start a training job; returns the Operation. Options: TrainingOptions fields (hidden, steps, ...);
        any other TrainConfig field goes through config_json."""
        typed = {k: v for k, v in options.items() if k in _OPTION_FIELDS and v is not None}
        extra = {k: v for k, v in options.items() if k not in _OPTION_FIELDS}
        req = rnn_pb2.StartTrainingRequest(
            data=data,
            props=props,
            run_id=run_id,
            options=rnn_pb2.TrainingOptions(**typed),
            config_json=json.dumps(extra) if extra else "",
        )
        return call(self.stub.StartTraining, req, timeout=self.timeout).operation

    def list_models(self) -> list:
        return list(
            call(self.stub.ListModels, rnn_pb2.ListModelsRequest(), timeout=self.timeout, idempotent=True).models
        )

    # -- generation --
    def generate(
        self,
        model: str,
        conditioning: np.ndarray | str,
        duration: float,
        *,
        step: int = 0,
        temperature: float = 1.0,
        seed: int | None = None,
        voices: int = 0,
        stream: bool = False,
        chain_model: str = "",
        chain_step: int = 0,
        timeout: float | None = 600.0,
    ) -> tuple:
        """Render `conditioning` (an array [N, C] / [B, N, C], or a store URI/key of a .npy) over `duration` s.
        With `chain_model` (a parameter tier), the conditioning drives that tier and its controls drive `model`.

        Returns (GenerateResult, audio [B, T] float32 or None when not streamed)."""
        req = rnn_pb2.GenerateRequest(
            model=model,
            step=step,
            duration=duration,
            temperature=temperature,
            voices=voices,
            stream_audio=stream,
            chain_model=chain_model,
            chain_step=chain_step,
        )
        if seed is not None:
            req.seed = seed
        if isinstance(conditioning, str):
            req.conditioning_uri = conditioning
        else:
            a = np.asarray(conditioning, dtype=np.float32)
            a = a[None] if a.ndim == 2 else a
            if a.ndim != 3:
                raise ValueError(f"conditioning must be [N, C] or [B, N, C], got shape {a.shape}")
            req.array.CopyFrom(
                rnn_pb2.ConditioningArray(
                    values=a.ravel().tolist(), batch=a.shape[0], points=a.shape[1], columns=a.shape[2]
                )
            )
        parts, result = [], None
        try:
            for resp in self.stub.Generate(req, timeout=timeout):
                if resp.WhichOneof("payload") == "chunk":
                    parts.append(chunk_audio(resp.chunk))
                else:
                    result = resp.result
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        audio = np.concatenate(parts).T.copy() if parts else None
        return result, audio

    # -- live --
    def play(
        self,
        model: str,
        values: list[float] | None = None,
        *,
        updates: queue.Queue | Iterable | None = None,
        step: int = 0,
        chunk_samples: int = 0,
        temperature: float = 1.0,
        seed: int | None = None,
        max_ahead_ms: int = 0,
        max_seconds: float = 0.0,
        chain_model: str = "",
        chain_step: int = 0,
    ) -> Iterator[tuple[np.ndarray, list[float]]]:
        """A live session: yields (audio [n] float32, values) per chunk as the server makes them.

        `updates` feeds parameter changes: a queue.Queue of dicts ({"name": value, ...}, optional "_glide_ms")
        — put None to end the session — or any iterable of such dicts."""
        start = rnn_pb2.PlayStart(
            model=model,
            step=step,
            values=values or [],
            chunk_samples=chunk_samples,
            temperature=temperature,
            max_ahead_ms=max_ahead_ms,
            max_seconds=max_seconds,
            chain_model=chain_model,
            chain_step=chain_step,
        )
        if seed is not None:
            start.seed = seed

        def as_request(u: dict) -> rnn_pb2.PlayRequest:
            u = dict(u)
            glide = float(u.pop("_glide_ms", 0.0))
            temp = float(u.pop("_temperature", 0.0))
            return rnn_pb2.PlayRequest(update=rnn_pb2.ParameterUpdate(values=u, glide_ms=glide, temperature=temp))

        def requests():
            yield rnn_pb2.PlayRequest(start=start)
            if isinstance(updates, queue.Queue):
                while (u := updates.get()) is not None:
                    yield as_request(u)
            elif updates is not None:
                for u in updates:
                    yield as_request(u)

        try:
            for resp in self.stub.Play(requests()):
                yield chunk_audio(resp.chunk)[:, 0], list(resp.values)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    # -- export --
    def export(self, model: str, step: int = 0) -> str:
        """TorchScript export of a checkpoint; returns the store URI of model.ts."""
        return call(self.stub.Export, rnn_pb2.ExportRequest(model=model, step=step), timeout=300.0).uri
