"""The live bridge: RnnService.Play sessions carried over plain HTTP to the grid page's AudioWorklet.

    bridge = LiveBridge(RnnClient("rnn:50054"), "rnn/tones", max_sessions=4)
    s = bridge.open({"normPitch": 0.5}, temperature=1.0)     # ResourceExhausted past max_sessions
    rev = s.knobs({"normPitch": 0.8})                          # taken from the next chunk the service makes
    for block in s.blocks(): ...                               # frame() bytes: what GET /live/<id>/audio sends
    s.close()

The stdlib HTTP server cannot speak WebSocket without a library, so the audio goes down one long HTTP response per
session (read in the page with fetch() + ReadableStream) and knob moves come up as small POSTs. Each block on the
wire is `uint32 frames, uint32 rev` (little endian) then `frames` float32 samples: `rev` is the newest knob revision
whose values the service reports having used for that block, so the page can time a move to its first sound.

Bounded: at most `max_sessions` at once; a session nobody reads for `idle_s` ends (the queue to the page holds
`queue_blocks` blocks, and the producer gives up when it stays full); a session lasts at most `max_seconds`.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
from smf.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, SmfError

log = logging.getLogger("smf.grid.live")

__all__ = ["LiveBridge", "LiveSession", "add_live_arguments", "frame", "live_bridge"]

_END = object()
MAX_PENDING_UPDATES = 64


def frame(audio: np.ndarray, rev: int) -> bytes:
    """One block as the page reads it: header (frames, rev) then float32 little-endian samples."""
    a = np.asarray(audio, dtype="<f4")
    return struct.pack("<II", a.shape[0], rev) + a.tobytes()


def check_values(values, names: list[str], *, field: str) -> dict[str, float]:
    """{name: value in [0, 1]} for known params, or InvalidArgument naming the field."""
    if not isinstance(values, dict):
        raise InvalidArgument(field, f"must be an object of param values, e.g. {{{names[0]!r}: 0.5}}")
    out = {}
    for name, v in values.items():
        if name not in names:
            raise InvalidArgument(f"{field}.{name}", f"unknown param; the model's params are {names}")
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise InvalidArgument(f"{field}.{name}", f"must be a number in [0, 1], got {v!r}")
        out[name] = float(v)
    return out


def check_temperature(t, *, field: str = "temperature") -> float:
    if t is None:
        return 0.0
    if not isinstance(t, int | float) or isinstance(t, bool) or not 0.0 < t <= 10.0:
        raise InvalidArgument(field, f"must be a number in (0, 10], got {t!r}")
    return float(t)


class LiveSession:
    """One Play stream: a thread reads the service's chunks into a bounded queue that the page's response drains."""

    def __init__(self, bridge: LiveBridge, sid: str, values: dict[str, float], temperature: float):
        self.bridge, self.id = bridge, sid
        self.names = bridge.params
        self.current = np.array([values.get(n, 0.5) for n in self.names], dtype=np.float32)
        self.revs: list[tuple[int, np.ndarray]] = []  # knob revisions sent and not yet heard, oldest first
        self.rev = self.heard = 0
        self.updates: queue.Queue = queue.Queue()
        self.out: queue.Queue = queue.Queue(maxsize=bridge.queue_blocks)
        self.closed = threading.Event()
        self.reason = ""
        self.lock = threading.Lock()
        self.frames = 0
        self.reading = False  # one page reads a session's audio; a second GET would split the blocks
        start = [float(v) for v in self.current]
        self.thread = threading.Thread(target=self._run, args=(start, temperature), name=f"live-{sid}", daemon=True)
        self.thread.start()

    def _run(self, start: list[float], temperature: float) -> None:
        b = self.bridge
        try:
            for audio, values in b.client.play(
                b.model,
                start,
                updates=self.updates,
                chunk_samples=b.chunk_samples,
                temperature=temperature or 1.0,
                max_ahead_ms=b.max_ahead_ms,
                max_seconds=b.max_seconds,
                chain_model=b.chain,
            ):
                block = frame(audio, self._heard(values))
                try:
                    self.out.put(block, timeout=b.idle_s)
                except queue.Full:
                    self.reason = f"idle: nobody read the audio for {b.idle_s:g} s"
                    break
                self.frames += len(audio)
                if self.closed.is_set():
                    break
            else:
                self.reason = self.reason or "ended (max duration or the service closed it)"
        except SmfError as exc:
            self.reason = f"the rnn service: {exc.message}"
            log.warning("live %s: %s", self.id, exc.message)
        finally:
            self.close(self.reason)
            self.updates.put(None)  # ends the request stream, so the Play call finishes
            try:
                self.out.put_nowait(_END)
            except queue.Full:
                pass  # the reader sees `closed` instead

    def _heard(self, values: list[float]) -> int:
        """The newest sent revision whose values the service reports for this block (they match exactly at zero
        glide); a matched revision means every older one was taken too."""
        got = np.asarray(values, dtype=np.float32)
        with self.lock:
            for k in range(len(self.revs) - 1, -1, -1):
                if got.shape == self.revs[k][1].shape and np.allclose(got, self.revs[k][1], atol=1e-6):
                    self.heard = self.revs[k][0]
                    del self.revs[: k + 1]
                    break
            return self.heard

    def knobs(self, values: dict[str, float], temperature: float = 0.0) -> int:
        """Send new values (some params, by name); returns the revision the page will see on its first block."""
        if self.closed.is_set():
            raise NotFound(f"live session {self.id} has ended: {self.reason}")
        if self.updates.qsize() > MAX_PENDING_UPDATES:
            raise ResourceExhausted(f"{MAX_PENDING_UPDATES} knob moves wait for the rnn service: send one at a time")
        with self.lock:
            for name, v in values.items():
                self.current[self.names.index(name)] = v
            self.rev += 1
            self.revs.append((self.rev, self.current.copy()))
            del self.revs[: -self.bridge.queue_blocks * 8]  # bounded even if the service never reports them
            rev = self.rev
        update = dict(values)
        if temperature:
            update["_temperature"] = temperature
        self.updates.put(update)
        return rev

    def blocks(self) -> Iterator[bytes]:
        """The framed blocks as they come, until the session ends; one reader per session."""
        with self.lock:
            if self.reading:
                raise FailedPrecondition(f"live session {self.id}'s audio is already being read by another request")
            self.reading = True
        while True:
            try:
                block = self.out.get(timeout=0.5)
            except queue.Empty:
                if self.closed.is_set():
                    return
                continue
            if block is _END:
                return
            yield block

    def close(self, reason: str = "stopped") -> None:
        if not self.closed.is_set():
            self.reason = self.reason or reason
            self.closed.set()
            self.updates.put(None)
            self.bridge._forget(self.id)

    def info(self) -> dict:
        return {"session": self.id, "params": self.names, "sample_rate": self.bridge.sample_rate}


class LiveBridge:
    """The live sessions of one auditioner, all playing `model` (optionally chained: `chain` is a parameter tier
    whose params are the knobs) on the rnn service `client` talks to."""

    def __init__(
        self,
        client,
        model: str,
        *,
        chain: str = "",
        max_sessions: int = 4,
        idle_s: float = 20.0,
        max_seconds: float = 600.0,
        chunk_ms: int = 50,
        max_ahead_ms: int = 200,
        queue_blocks: int = 16,
    ):
        self.client, self.model, self.chain = client, model, chain
        self.max_sessions, self.idle_s, self.max_seconds = max_sessions, idle_s, max_seconds
        self.max_ahead_ms, self.queue_blocks = max_ahead_ms, queue_blocks
        knob_model = _model_info(client, chain or model, field="--chain" if chain else "--model")
        self.params = list(knob_model.param_names)
        self.sample_rate = (
            int(_model_info(client, model, field="--model").sample_rate) if chain else int(knob_model.sample_rate)
        )
        self.chunk_samples = max(16, self.sample_rate * chunk_ms // 1000)
        self.sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {
            "enabled": True,
            "model": self.model,
            "chain": self.chain,
            "params": self.params,
            "sample_rate": self.sample_rate,
            "max_sessions": self.max_sessions,
            "max_seconds": self.max_seconds,
            "chunk_ms": round(1000 * self.chunk_samples / self.sample_rate),
        }

    def open(self, values: dict | None = None, temperature=None) -> LiveSession:
        values = check_values(values or {}, self.params, field="values")
        temp = check_temperature(temperature)
        with self._lock:
            if len(self.sessions) >= self.max_sessions:
                raise ResourceExhausted(
                    f"{len(self.sessions)} live sessions are playing, the limit is {self.max_sessions}: "
                    "stop one (or wait for an idle one to end) and try again"
                )
            sid = secrets.token_urlsafe(12)
            self.sessions[sid] = None  # type: ignore[assignment]  # reserves the slot while the thread starts
        session = LiveSession(self, sid, values, temp)
        with self._lock:
            if sid in self.sessions:
                self.sessions[sid] = session
        return session

    def get(self, sid: str) -> LiveSession:
        with self._lock:
            s = self.sessions.get(sid)
        if s is None:
            raise NotFound(f"no live session {sid!r} (it ended or never existed): start the panel again")
        return s

    def _forget(self, sid: str) -> None:
        with self._lock:
            self.sessions.pop(sid, None)

    def close(self) -> None:
        with self._lock:
            sessions = [s for s in self.sessions.values() if s is not None]
        for s in sessions:
            s.close("the auditioner stopped")
        deadline = time.monotonic() + 5
        for s in sessions:
            s.thread.join(max(0.0, deadline - time.monotonic()))


def _model_info(client, model: str, *, field: str):
    """The rnn service's ModelInfo of `model` ('rnn/NAME' or 'NAME'), or InvalidArgument naming the flag."""
    want = model if "/" in model else f"rnn/{model}"
    models = client.list_models()
    for m in models:
        if m.ref.id in (model, want):
            return m
    known = sorted(m.ref.id for m in models)
    raise InvalidArgument(field, f"{model} is not known to the rnn service (it has {known[:20]})")


def add_live_arguments(parser) -> None:
    """The live panel's flags, shared by `smf grid open` and `smf serve grid` (defaults from $SMF_LIVE_RNN,
    $SMF_LIVE_MODEL, $SMF_LIVE_CHAIN: what the Helm chart sets)."""
    env = os.environ.get
    parser.add_argument(
        "--rnn", metavar="HOST:PORT", default=env("SMF_LIVE_RNN") or None, help="rnn service for the live panel"
    )
    parser.add_argument(
        "--live-model",
        "--model",
        dest="live_model",
        default=env("SMF_LIVE_MODEL", ""),
        help="with --rnn: the model the live panel plays (rnn/NAME)",
    )
    parser.add_argument(
        "--chain", default=env("SMF_LIVE_CHAIN", ""), help="with --rnn: a parameter tier whose params are the knobs"
    )
    parser.add_argument("--live-sessions", type=int, default=4, help="live sessions at once (default 4)")
    parser.add_argument(
        "--live-ahead-ms", type=int, default=200, help="how far the synth runs ahead of the page (default 200)"
    )


def live_bridge(args, *, token: str | None) -> LiveBridge | None:
    """The live panel's bridge to `--rnn` (None without it); the model is checked against the service now."""
    if not args.rnn:
        if args.live_model or args.chain:
            raise InvalidArgument("--rnn", "--model/--chain need the rnn service to play them: add --rnn HOST:PORT")
        return None
    if not args.live_model:
        raise InvalidArgument("--model", "the live panel needs a model to play: add --model rnn/NAME")
    if not 1 <= args.live_sessions <= 64:
        raise InvalidArgument("--live-sessions", f"must be in [1, 64], got {args.live_sessions}")
    if not 20 <= args.live_ahead_ms <= 2000:
        raise InvalidArgument("--live-ahead-ms", f"must be in [20, 2000], got {args.live_ahead_ms}")
    from smf.rnn.client import RnnClient

    bridge = LiveBridge(
        RnnClient(args.rnn, token=token),
        args.live_model,
        chain=args.chain,
        max_sessions=args.live_sessions,
        max_ahead_ms=args.live_ahead_ms,
    )
    print(f"live panel: {bridge.model} ({', '.join(bridge.params)}) on {args.rnn}", flush=True)
    return bridge
