"""Long-running operations: run work in a worker thread, report its progress, let clients follow and cancel it.

Every service keeps one `OperationRegistry` and serves `OperationServicer(registry)` next to its own API:

    registry = OperationRegistry()

    def render(ctx: OperationContext) -> list[str]:
        for i in range(n):
            if ctx.cancelled:
                raise Cancelled("render cancelled")
            ...
            ctx.report(step=i + 1, total=n, message=f"cell {i + 1}/{n}")
        return [store.key_uri(grid_id)]

    op = registry.start("grid.render", render, metadata={"grid": grid_id})   # -> common_pb2.Operation snapshot
    return StartRenderResponse(operation=op)

Work that runs elsewhere (a training Job writing progress.json to the store) is followed with `start_external`,
whose poll function the registry calls every few seconds. At shutdown, `cancel_all` stops the external work this
process owns (a local training subprocess) and leaves alone the work that outlives it (a Kubernetes Job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from smf.common.errors import Cancelled, NotFound, SmfError
from smf.common.v1 import common_pb2, operations_pb2, operations_pb2_grpc

log = logging.getLogger("smf.operations")

State = common_pb2.Operation.State
PENDING, RUNNING = common_pb2.Operation.STATE_PENDING, common_pb2.Operation.STATE_RUNNING
SUCCEEDED, FAILED = common_pb2.Operation.STATE_SUCCEEDED, common_pb2.Operation.STATE_FAILED
CANCELLED = common_pb2.Operation.STATE_CANCELLED
FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
SHUTDOWN_GRACE_S = 10.0  # how long cancel_all waits for owned external work to stop (a trainer's checkpoint)


@dataclass
class _Record:
    """The registry's live view of one operation; only touched under the registry lock."""

    op: common_pb2.Operation
    cancel: threading.Event = field(default_factory=threading.Event)
    version: int = 0
    rate_origin: tuple[float, int] | None = None  # (time, step) of the first report, for the ETA
    watchers: set = field(default_factory=set)  # _Watcher
    # external work: detached = it outlives this process, so shutdown leaves it running; stop = how shutdown
    # stops it when this process owns it
    detached: bool = False
    stop: Callable[[], None] | None = None


class _Watcher:
    """Wakes one asyncio task (a WatchOperation stream) when its operation changes, from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class OperationContext:
    """What the work function sees: report progress, check for cancellation."""

    def __init__(self, registry: OperationRegistry, op_id: str, cancel: threading.Event):
        self._registry, self.operation_id, self._cancel = registry, op_id, cancel

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise Cancelled if a client asked to stop; call between steps."""
        if self._cancel.is_set():
            raise Cancelled(f"operation {self.operation_id} was cancelled")

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`, waking early on cancellation; returns True if cancelled."""
        return self._cancel.wait(seconds)

    def report(
        self,
        *,
        step: int | None = None,
        total: int | None = None,
        loss: float | None = None,
        message: str | None = None,
        metrics: dict[str, float] | None = None,
        eta_seconds: float | None = None,
        samples_per_second: float | None = None,
    ) -> None:
        """Update progress; omitted fields keep their value. The ETA comes from the step rate unless given."""
        self._registry._report(
            self.operation_id,
            step=step,
            total=total,
            loss=loss,
            message=message,
            metrics=metrics,
            eta_seconds=eta_seconds,
            samples_per_second=samples_per_second,
        )


@dataclass
class ExternalStatus:
    """One poll of work running outside this process (e.g. a Job's state + its progress.json)."""

    state: str  # "pending" | "running" | "succeeded" | "failed" | "cancelled"
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    message: str | None = None
    metrics: dict[str, float] | None = None
    eta_seconds: float | None = None
    samples_per_second: float | None = None
    result_uris: list[str] = field(default_factory=list)
    error: str | None = None
    error_code: str = "INTERNAL"  # a grpc.StatusCode name; a trainer that hit InvalidArgument can say so

    @classmethod
    def from_progress(cls, progress: dict, *, state: str | None = None) -> ExternalStatus:
        """From a trainer's progress.json ({step, total, loss, message, metrics, eta_seconds, ..., state})."""
        known = {
            k: progress[k]
            for k in (
                "step",
                "total",
                "loss",
                "message",
                "metrics",
                "eta_seconds",
                "samples_per_second",
                "result_uris",
                "error",
                "error_code",
            )
            if k in progress
        }
        return cls(state=state or progress.get("state", "running"), **known)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class OperationRegistry:
    """Thread-safe table of operations started by this process; keeps the newest `max_history` finished ones.

    `max_running` bounds how many work functions run at once; the rest wait in PENDING.
    """

    def __init__(self, *, max_history: int = 1000, max_running: int = 8):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ops: OrderedDict[str, _Record] = OrderedDict()
        self._slots = threading.BoundedSemaphore(max_running)
        self.max_history = max_history

    # -- starting work --
    def start(
        self, kind: str, fn: Callable[[OperationContext], list[str]], *, metadata: dict[str, str] | None = None
    ) -> common_pb2.Operation:
        """Run `fn(ctx)` in a worker thread; returns the operation (PENDING) at once. fn returns result URIs."""
        return self._start(kind, fn, metadata)

    def _start(
        self,
        kind: str,
        fn: Callable,
        metadata: dict[str, str] | None,
        *,
        detached: bool = False,
        stop: Callable[[], None] | None = None,
    ) -> common_pb2.Operation:
        op_id = f"op-{uuid.uuid4().hex[:16]}"
        now = _now()
        op = common_pb2.Operation(
            id=op_id,
            kind=kind,
            state=PENDING,
            create_time=now,
            update_time=now,
            metadata=metadata or {},
            progress=common_pb2.Progress(),
        )
        record = _Record(op=op, detached=detached, stop=stop)
        with self._lock:
            self._ops[op_id] = record
            self._trim()
            snapshot = common_pb2.Operation()
            snapshot.CopyFrom(op)
        # daemon: a server shutting down must not wait for a training poll loop to notice its cancel flag
        threading.Thread(
            target=self._run, args=(op_id, fn, record.cancel), name=f"op-{kind}-{op_id[3:11]}", daemon=True
        ).start()
        return snapshot

    def start_external(
        self,
        kind: str,
        poll: Callable[[], ExternalStatus],
        *,
        interval: float = 2.0,
        on_cancel: Callable[[], None] | None = None,
        stop_on_shutdown: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> common_pb2.Operation:
        """Follow work running elsewhere: `poll()` every `interval` seconds until it reports a final state.

        Cancelling the operation calls `on_cancel()` (e.g. cancel the Job) and keeps polling until the work is
        really gone, so CANCELLED means stopped.

        `stop_on_shutdown`: whether `cancel_all` (server shutdown) stops the work too. By default, yes when
        `on_cancel` is the `cancel` of a job this process owns (`JobHandle.owned_by_process`: a local subprocess
        would be orphaned), no otherwise (a Kubernetes Job outlives the pod and the next replica re-attaches to it).
        """
        stop = _Once(on_cancel) if on_cancel is not None else None
        if stop_on_shutdown is None:
            stop_on_shutdown = bool(getattr(getattr(on_cancel, "__self__", None), "owned_by_process", False))

        def follow(ctx: OperationContext) -> list[str]:
            cancel_sent = False
            while True:
                if ctx.cancelled and not cancel_sent and stop is not None:
                    stop()
                    cancel_sent = True
                status = poll()
                ctx.report(
                    step=status.step,
                    total=status.total,
                    loss=status.loss,
                    message=status.message,
                    metrics=status.metrics,
                    eta_seconds=status.eta_seconds,
                    samples_per_second=status.samples_per_second,
                )
                if status.state == "succeeded":
                    return list(status.result_uris)
                if status.state in ("failed", "cancelled"):
                    if ctx.cancelled or status.state == "cancelled":
                        raise Cancelled(status.error or f"{kind} was cancelled")
                    raise _external_error(status.error_code, status.error or f"{kind} failed (no error reported)")
                if ctx.cancelled and stop is None:
                    raise Cancelled(f"{kind} was cancelled")  # nothing to stop; stop following
                if cancel_sent:
                    time.sleep(interval)  # ctx.sleep returns at once once cancelled: poll the stopping work calmly
                else:
                    ctx.sleep(interval)

        return self._start(
            kind, follow, metadata, detached=not stop_on_shutdown, stop=stop if stop_on_shutdown else None
        )

    def _run(self, op_id: str, fn: Callable, cancel: threading.Event) -> None:
        with self._slots:
            if cancel.is_set():  # cancelled while PENDING: never start the work
                self._finish(op_id, CANCELLED, error=(Cancelled.code, "cancelled before it started"))
                return
            self._update(op_id, lambda op: setattr(op, "state", RUNNING) if op.state == PENDING else None)
            try:
                results = fn(OperationContext(self, op_id, cancel))
            except Cancelled as exc:
                self._finish(op_id, CANCELLED, error=(exc.code, exc.message))
            except SmfError as exc:
                state = CANCELLED if cancel.is_set() else FAILED
                self._finish(op_id, state, error=(exc.code, exc.message))
            except Exception as exc:
                log.exception("operation %s failed", op_id)
                self._finish(op_id, FAILED, error=(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}"))
            else:
                # a cancel that arrived while fn was finishing still wins: the client asked for it to stop
                state = CANCELLED if cancel.is_set() else SUCCEEDED
                self._finish(op_id, state, results=[str(u) for u in results or ()])

    # -- state changes (any thread) --
    def _update(self, op_id: str, change: Callable[[common_pb2.Operation], None]) -> None:
        with self._lock:
            record = self._ops.get(op_id)
            if record is None or record.op.state in FINAL:
                return
            change(record.op)
            record.op.update_time.CopyFrom(_now())
            record.version += 1
            for watcher in record.watchers:
                watcher.notify()
            self._changed.notify_all()

    def _finish(
        self,
        op_id: str,
        state: common_pb2.Operation.State,
        *,
        results: Sequence[str] = (),
        error: tuple[grpc.StatusCode, str] | None = None,
    ) -> None:
        def change(op: common_pb2.Operation) -> None:
            op.state = state
            op.done = True
            op.result_uris.extend(results)
            op.progress.eta_seconds = 0
            if error is not None:
                op.error.code, op.error.message = error[0].value[0], error[1]

        self._update(op_id, change)
        with self._lock:
            self._trim()

    def _report(self, op_id: str, *, step, total, loss, message, metrics, eta_seconds, samples_per_second) -> None:
        now = time.monotonic()

        def change(op: common_pb2.Operation) -> None:
            p = op.progress
            if step is not None:
                p.step = int(step)
            if total is not None:
                p.total = int(total)
            if loss is not None:
                p.loss = float(loss)
            if message is not None:
                p.message = message
            if metrics:
                p.metrics.update({k: float(v) for k, v in metrics.items()})
            if samples_per_second is not None:
                p.samples_per_second = float(samples_per_second)
            if eta_seconds is not None:
                p.eta_seconds = float(eta_seconds)
            elif step is not None and record is not None:  # always, as change runs only for a known record
                p.eta_seconds = self._eta(record, now, p.step, p.total)

        with self._lock:
            record = self._ops.get(op_id)
        if record is not None:
            self._update(op_id, change)

    @staticmethod
    def _eta(record: _Record, now: float, step: int, total: int) -> float:
        """Seconds left at the average rate since the first report (0 = unknown). Called under the lock."""
        if record.rate_origin is None:
            record.rate_origin = (now, step)
            return 0.0
        t0, s0 = record.rate_origin
        if total <= 0 or step <= s0 or now <= t0:
            return 0.0
        rate = (step - s0) / (now - t0)
        return max(total - step, 0) / rate

    def _trim(self) -> None:
        """Forget the oldest finished operations beyond max_history (running ones are always kept)."""
        finished = [k for k, r in self._ops.items() if r.op.state in FINAL]
        for op_id in finished[: max(0, len(finished) - self.max_history)]:
            del self._ops[op_id]

    # -- queries --
    def get(self, op_id: str) -> common_pb2.Operation:
        """A snapshot of the operation; NotFound if unknown (or long forgotten)."""
        with self._lock:
            return self._snapshot(op_id)[0]

    def _snapshot(self, op_id: str) -> tuple[common_pb2.Operation, int]:
        record = self._ops.get(op_id)
        if record is None:
            raise NotFound(f"operation {op_id!r} not found (unknown id, or finished long ago)")
        op = common_pb2.Operation()
        op.CopyFrom(record.op)
        return op, record.version

    def list(self, *, kind: str = "", active_only: bool = False, limit: int = 0) -> list[common_pb2.Operation]:
        """Snapshots, newest first."""
        with self._lock:
            ids = [
                k
                for k, r in reversed(self._ops.items())
                if (not kind or r.op.kind == kind) and not (active_only and r.op.state in FINAL)
            ]
            ids = ids[:limit] if limit > 0 else ids
            return [self._snapshot(k)[0] for k in ids]

    def cancel(self, op_id: str) -> common_pb2.Operation:
        """Ask the operation to stop (best effort); a finished one is returned unchanged."""
        with self._lock:
            record = self._ops.get(op_id)
            if record is None:
                raise NotFound(f"operation {op_id!r} not found")
            record.cancel.set()
            pending = record.op.state == PENDING
        if pending:  # waiting for a worker slot: nothing runs yet, so it is cancelled right away
            self._finish(op_id, CANCELLED, error=(Cancelled.code, "cancelled before it started"))
        else:
            self._update(op_id, lambda op: setattr(op.progress, "message", "cancelling"))
        return self.get(op_id)

    def cancel_all(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Server shutdown: ask every running operation to stop; stop owned external work and wait for it.

        In-process work gets its cancel flag (its threads end with the process anyway). External work this process
        owns (a local training subprocess) gets `on_cancel()` now (SIGTERM: the trainer checkpoints and exits) and
        is awaited up to `grace` seconds, so the server does not exit first and leave it orphaned. External work that
        outlives the process (a Kubernetes Job) is left running, not cancelled: the next replica re-attaches to it
        through the store's progress.json.
        """
        with self._lock:
            records = [(k, r) for k, r in self._ops.items() if r.op.state not in FINAL and not r.detached]
        deadline = time.monotonic() + grace
        for op_id, record in records:
            with contextlib.suppress(NotFound):  # finished and forgotten meanwhile
                self.cancel(op_id)
            if record.stop is not None:
                try:
                    record.stop()  # here rather than in the follow thread, which may be mid-poll or still PENDING
                except Exception:
                    log.exception("stopping operation %s at shutdown failed", op_id)
        for op_id, record in records:
            if record.stop is not None:
                with contextlib.suppress(NotFound):
                    op = self.wait(op_id, timeout=max(0.0, deadline - time.monotonic()))
                    if not op.done:
                        log.warning(
                            "operation %s (%s) still stopping after %.0fs; exiting anyway", op_id, op.kind, grace
                        )

    def wait(self, op_id: str, timeout: float | None = None) -> common_pb2.Operation:
        """Block until the operation is done (or timeout); returns its snapshot either way."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                op, _ = self._snapshot(op_id)
                remaining = None if deadline is None else deadline - time.monotonic()
                if op.done or (remaining is not None and remaining <= 0):
                    return op
                self._changed.wait(remaining)

    async def watch(self, op_id: str):
        """Async iterator of snapshots: the current one, then one per change (coalesced), ending when done."""
        watcher = _Watcher()
        with self._lock:
            record = self._ops.get(op_id)
            if record is None:
                raise NotFound(f"operation {op_id!r} not found")
            record.watchers.add(watcher)
        try:
            last = -1
            while True:
                watcher.event.clear()  # before the snapshot: a change right after it sets the event again
                with self._lock:
                    op, version = self._snapshot(op_id)
                if version != last:
                    last = version
                    yield op
                if op.done:
                    return
                await watcher.event.wait()
        finally:
            with self._lock:
                record.watchers.discard(watcher)


class _Once:
    """Calls `fn` the first time only: shutdown and the follow thread may both try to stop the same work."""

    def __init__(self, fn: Callable[[], None]):
        self._fn, self._lock, self._called = fn, threading.Lock(), False

    def __call__(self) -> None:
        with self._lock:
            if self._called:
                return
            self._called = True
        self._fn()


def _external_error(code_name: str, message: str) -> SmfError:
    """The error external work reported; its class does not cross processes, its status code name does."""
    exc = SmfError(message)
    exc.code = getattr(grpc.StatusCode, str(code_name).upper(), grpc.StatusCode.INTERNAL)
    return exc


class OperationServicer(operations_pb2_grpc.OperationServiceServicer):
    """smf.common.v1.OperationService over a registry; every service adds it next to its own servicer."""

    def __init__(self, registry: OperationRegistry):
        self.registry = registry

    async def GetOperation(self, request, context):
        return operations_pb2.GetOperationResponse(operation=self.registry.get(request.operation_id))

    async def WatchOperation(self, request, context):
        async for op in self.registry.watch(request.operation_id):
            yield operations_pb2.WatchOperationResponse(operation=op)

    async def CancelOperation(self, request, context):
        return operations_pb2.CancelOperationResponse(operation=self.registry.cancel(request.operation_id))

    async def ListOperations(self, request, context):
        ops = self.registry.list(kind=request.kind, active_only=request.active_only, limit=request.page_size)
        return operations_pb2.ListOperationsResponse(operations=ops)


OPERATION_SERVICE_NAME = operations_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name


def with_operations(add_servicer: Callable, servicer) -> list:
    """(add function, servicer) pairs for the server base: a service plus the shared OperationService that serves
    the operations of its `registry`, e.g. `with_operations(grid_pb2_grpc.add_GridServiceServicer_to_server, g)`."""
    return [
        (add_servicer, servicer),
        (operations_pb2_grpc.add_OperationServiceServicer_to_server, OperationServicer(servicer.registry)),
    ]
