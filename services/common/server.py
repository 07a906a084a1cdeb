"""The gRPC server base every smf service runs on: auth, health, reflection, metrics, error mapping, shutdown.

A service's `server.py` is a thin servicer; this module owns the serving lifecycle (start -> NOT_SERVING until
ready -> SERVING -> SIGTERM -> NOT_SERVING -> grace -> close -> exit):

    from smf.common.server import run_server
    run_server(name="gan", servicers=servicers(GanServicer(store)),           # every service: servicers(servicer)
               service_names=["smf.gan.v1.GanService"], port=50051, metrics_port=51051)

    handle = await start_server(..., port=0, metrics_port=0, token="t")   # tests: handle.port, await handle.stop()

Two optional methods of a servicer drive the lifecycle, so no service needs its own shutdown code:
- `ready()`: raises (anything) while the service cannot serve (its store unreachable, its models not listable).
  Health answers NOT_SERVING until every servicer's `ready()` passes, then SERVING, rechecked every
  `readiness_interval` seconds, so a balancer stops routing to a replica that lost its store.
- `close()`: called once at shutdown, after the grace period drained the running calls (stop owned training jobs,
  stop a batcher, close clients the servicer holds). It may block; it runs in a worker thread.

Admission (`smf.common.admission`): callers with the token and anonymous calls (health, reflection) have separate
budgets of concurrent calls, per client and in all; over a limit the offending call gets RESOURCE_EXHAUSTED, nobody
else does. Health answers Check, Watch and List.

Every handler (unary or streaming, async or plain `def`) gets the same treatment (`smf.common.interceptors`): raising
an `SmfError` becomes its status code, anything else becomes INTERNAL with the traceback logged. Plain `def` handlers
run in worker threads so CPU-heavy work (rendering audio) does not stall the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from smf.common.admission import ENV as ADMISSION_ENV
from smf.common.admission import AdmissionLimits
from smf.common.errors import FailedPrecondition
from smf.common.interceptors import AdmissionInterceptor, AuthInterceptor, ErrorInterceptor, MetricsInterceptor
from smf.common.store_args import add_store_argument

log = logging.getLogger("smf.server")

MAX_MESSAGE_BYTES = 8 << 20  # audio travels in chunks well below this; a bigger message is a client bug
# grpc's own receive limits (messages, metadata) are this multiple of ours: a request between the two reaches our
# check (answered and counted RESOURCE_EXHAUSTED); only one beyond is refused by grpc itself, before any metric sees it
GRPC_MESSAGE_CEILING = 4
MAX_METADATA_BYTES = 16 << 10  # grpc's default hard limit; ours, so that a refusal is answered and counted
DEFAULT_GRACE_S = 10.0
READINESS_INTERVAL_S = 5.0  # how often health rechecks that the service can serve
FIRST_READINESS_WAIT_S = 10.0  # how long start_server waits for the first check before returning NOT_SERVING
READINESS_PROBE_KEY = "readiness-probe"  # a key nobody writes: reading its metadata proves the store answers

# ---- health ------------------------------------------------------------------------------------------------


class HealthServicer(health.aio.HealthServicer):
    """grpc's asyncio health servicer, plus `List`: grpcio-health-checking declares it in the proto but its servicer
    does not implement it (every call answered UNIMPLEMENTED-as-INTERNAL with a traceback)."""

    async def List(self, request, context):
        # _server_status is the servicer's own table (service -> status), the one Check answers from
        statuses = {name: health_pb2.HealthCheckResponse(status=s) for name, s in self._server_status.items()}
        return health_pb2.HealthListResponse(statuses=statuses)


# ---- lifecycle ----------------------------------------------------------------------------------------------


async def _call(fn: Callable[[], Any]) -> Any:
    """Run a lifecycle callable without stalling the loop: a plain one may block (cancel_all waits for training
    jobs to stop), so it runs in a worker thread; a coroutine function is awaited."""
    result = fn() if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(fn)
    if inspect.isawaitable(result):
        result = await result
    return result


def _distinct(servicers: Sequence[tuple[Callable, Any]], method: str) -> list[Callable[[], Any]]:
    """`method` of each servicer that has one, once per servicer object (a servicer may be added twice)."""
    seen: set[int] = set()
    out = []
    for _, servicer in servicers:
        fn = getattr(servicer, method, None)
        if callable(fn) and id(servicer) not in seen:
            seen.add(id(servicer))
            out.append(fn)
    return out


def store_ready(store) -> None:
    """The readiness check of a service whose work lives in a store: one metadata read (a missing key is an answer;
    an unreachable store raises Unavailable, bad credentials PermissionDenied). `def ready(self): store_ready(...)`."""
    store.exists(READINESS_PROBE_KEY)


class Readiness:
    """Drives health from the servicers' `ready()` checks: NOT_SERVING until all pass, rechecked every `interval`."""

    def __init__(self, name: str, health_servicer, names: list[str], checks: list[Callable[[], Any]], interval: float):
        self.name, self.health, self.names, self.checks, self.interval = name, health_servicer, names, checks, interval
        self.ok: bool | None = None  # None: not checked yet
        self._first = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self, first_wait: float) -> None:
        await self._set(False)  # until the first check says otherwise
        self._task = asyncio.create_task(self._loop(), name=f"{self.name}-readiness")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), first_wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> bool:
        """Run every check once (in worker threads) and set health accordingly; returns whether all passed."""
        error = None
        for fn in self.checks:
            try:
                await _call(fn)
            except Exception as exc:  # noqa: BLE001 — any failure means "cannot serve now"; the reason is logged
                error = exc
                break
        ok = error is None
        if ok != self.ok:
            if ok:
                log.info("%s: ready, health SERVING", self.name)
            else:
                log.warning("%s: not ready, health NOT_SERVING: %s", self.name, getattr(error, "message", error))
        await self._set(ok)
        return ok

    async def _set(self, ok: bool) -> None:
        self.ok = ok
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in self.names + [""]:  # "" = the server as a whole
            await self.health.set(service, status)

    async def _loop(self) -> None:
        while True:
            await self.check()
            self._first.set()
            await asyncio.sleep(self.interval)


@dataclass
class ServerHandle:
    """A started server. `await stop(grace)` flips health to NOT_SERVING, drains, and closes the metrics port."""

    name: str
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    health: HealthServicer
    admission: AdmissionInterceptor
    service_names: list[str]
    _metrics_http: Any = None
    _on_stop: list[Callable[[], Any]] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)
    _readiness: Readiness | None = None
    _stopped: bool = False

    @property
    def ready(self) -> bool:
        """Whether health says SERVING now (the last readiness check passed)."""
        return self._readiness is None or bool(self._readiness.ok)

    async def stop(self, grace: float | None = DEFAULT_GRACE_S) -> None:
        """NOT_SERVING -> `on_stop` callables -> drain up to `grace` s -> every servicer's `close()` -> metrics off."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()  # balancers stop routing here before we refuse calls
        if self._readiness is not None:
            await self._readiness.stop()
        for fn in self._on_stop:
            await _call(fn)
        await self.server.stop(grace)
        for close in self._closers:
            try:
                await _call(close)
            except Exception:
                log.exception("%s: closing %r at shutdown failed", self.name, close)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        log.info("%s server stopped", self.name)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def resolve_token(token: str | None, allow_insecure: bool) -> str | None:
    """The bearer token to require, or None when the operator explicitly allowed running without one."""
    token = token or os.environ.get("SMF_TOKEN") or None
    if token:
        return token
    if allow_insecure or os.environ.get("SMF_ALLOW_NO_AUTH") == "1":
        log.warning(
            "!!! AUTHENTICATION DISABLED: no SMF_TOKEN set and running with allow_insecure / "
            "SMF_ALLOW_NO_AUTH=1 — anyone who can reach this port can use the service !!!"
        )
        return None
    raise FailedPrecondition(
        "SMF_TOKEN is not set: give the server a bearer token (env SMF_TOKEN) or run it "
        "without auth explicitly with SMF_ALLOW_NO_AUTH=1 / --insecure"
    )


def _server_credentials() -> grpc.ServerCredentials | None:
    """TLS from $SMF_TLS_CERT + $SMF_TLS_KEY; with $SMF_TLS_CLIENT_CA also require client certs (mTLS)."""
    cert, key = os.environ.get("SMF_TLS_CERT"), os.environ.get("SMF_TLS_KEY")
    if not cert and not key:
        return None
    if not (cert and key):
        raise FailedPrecondition("TLS needs both SMF_TLS_CERT and SMF_TLS_KEY")
    ca = os.environ.get("SMF_TLS_CLIENT_CA")
    from pathlib import Path

    def read(p):
        return Path(p).read_bytes()

    return grpc.ssl_server_credentials(
        [(read(key), read(cert))], root_certificates=read(ca) if ca else None, require_client_auth=bool(ca)
    )


async def start_server(
    *,
    name: str,
    servicers: Sequence[tuple[Callable, Any]],
    service_names: Sequence[str],
    port: int,
    metrics_port: int | None,
    token: str | None = None,
    allow_insecure: bool = False,
    host: str = "0.0.0.0",
    admission: AdmissionLimits | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    on_stop: Sequence[Callable[[], Any]] = (),
    readiness_interval: float = READINESS_INTERVAL_S,
) -> ServerHandle:
    """Start serving `servicers` (pairs of generated `add_XServicer_to_server` and an instance); port 0 = free port.

    `token` defaults to $SMF_TOKEN; without one the server refuses to start unless `allow_insecure` (or
    $SMF_ALLOW_NO_AUTH=1). `metrics_port` 0 picks a free port, None serves no metrics. Health follows the servicers'
    `ready()` checks every `readiness_interval` seconds (see the module docstring); their `close()` runs at shutdown
    after the grace period. `on_stop` callables run at shutdown before the grace period (for what is not a
    servicer); plain ones run in a worker thread, so they may block. `admission` (default: from $SMF_MAX_CONCURRENT
    & co, see `smf.common.admission`) bounds the calls in flight per client; a request message above
    `max_message_bytes` is RESOURCE_EXHAUSTED.
    """
    required = resolve_token(token, allow_insecure)
    admit = AdmissionInterceptor(
        required, admission or AdmissionLimits.from_env(), max_metadata_bytes=MAX_METADATA_BYTES
    )
    # metrics outermost: every call is counted with its final code, the ones admission or auth refuse included
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(name), admit]
    if required:
        interceptors.append(AuthInterceptor(required))
    interceptors.append(ErrorInterceptor(max_message_bytes))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", GRPC_MESSAGE_CEILING * max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_metadata_size", GRPC_MESSAGE_CEILING * MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", GRPC_MESSAGE_CEILING * MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )  # port 0 must really be free, not shared with a stale server
    for add, servicer in servicers:
        add(servicer, server)

    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection(names + [health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    address = f"{host}:{port}"
    creds = _server_credentials()
    bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if bound == 0:
        raise FailedPrecondition(f"{name}: cannot bind gRPC port {address}")

    metrics_http = None
    if metrics_port is not None:
        metrics_http, _ = prometheus_client.start_http_server(metrics_port, addr=host)
        metrics_port = metrics_http.server_port

    await server.start()
    readiness = Readiness(name, health_servicer, names, _distinct(servicers, "ready"), readiness_interval)
    await readiness.start(FIRST_READINESS_WAIT_S)
    log.info(
        "%s serving gRPC on %s:%d%s (auth %s, tls %s)",
        name,
        host,
        bound,
        f", metrics on :{metrics_port}" if metrics_port else "",
        "on" if required else "OFF",
        "on" if creds else "off",
    )
    return ServerHandle(
        name=name,
        server=server,
        port=bound,
        metrics_port=metrics_port,
        health=health_servicer,
        admission=admit,
        service_names=names,
        _metrics_http=metrics_http,
        _on_stop=list(on_stop),
        _closers=_distinct(servicers, "close"),
        _readiness=readiness,
    )


def run_server(*, grace: float = DEFAULT_GRACE_S, **kwargs) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, let running calls finish within `grace` seconds, exit.

    Takes the same keyword arguments as `start_server`. Blocks; this is what `smf serve <svc>` runs.
    """

    async def serve() -> None:
        handle = await start_server(**kwargs)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        print(
            f"{handle.name}: serving on port {handle.port}"
            + (f", metrics on port {handle.metrics_port}" if handle.metrics_port else ""),
            flush=True,
        )
        await stop.wait()
        log.info("%s: signal received, draining for up to %.0fs", handle.name, grace)
        await handle.stop(grace)
        print(f"{handle.name}: stopped", flush=True)

    asyncio.run(serve())


class ServerThread:
    """A server running on its own event loop in a background thread, for sync code and tests:

    with ServerThread(name="gan", servicers=[...], service_names=[...], port=0, metrics_port=0,
                      token="t", host="127.0.0.1") as srv:
        channel = connect(f"127.0.0.1:{srv.port}", token="t")
    """

    def __init__(self, **start_kwargs):
        self._kwargs = start_kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smf-server-loop", daemon=True)
        self.handle: ServerHandle | None = None

    def start(self) -> Self:
        self._thread.start()
        try:
            self.handle = asyncio.run_coroutine_threadsafe(start_server(**self._kwargs), self._loop).result(30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            raise
        return self

    @property
    def port(self) -> int:
        return self._started().port

    @property
    def metrics_port(self) -> int | None:
        return self._started().metrics_port

    def _started(self) -> ServerHandle:
        if self.handle is None:
            raise RuntimeError("ServerThread: call start() first")
        return self.handle

    def run(self, coro, timeout: float | None = 30):
        """Run a coroutine on the server's loop (e.g. a health check) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        if self.handle is not None:
            self.run(self.handle.stop(grace), timeout=None if grace is None else grace + 30)
            self.handle = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- command line helpers for each service's main(argv) ------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """The flags every `smf serve <svc>` accepts, `--store` included. The token itself only comes from $SMF_TOKEN
    (argv is public)."""
    parser.add_argument("--port", type=int, default=default_port, help=f"gRPC port (default {default_port})")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=default_port + 1000,
        help="Prometheus port (default gRPC port + 1000; -1 = off)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, help="seconds to drain on SIGTERM")
    limits = AdmissionLimits()
    for flag, attr, what in (
        ("--max-concurrent", "total", "calls with the token in flight, in all"),
        ("--max-concurrent-per-client", "per_client", "calls in flight per client (token @ host)"),
        ("--max-anonymous", "anonymous_total", "calls without a token (health, reflection) in flight, in all"),
        ("--max-anonymous-per-peer", "anonymous_per_peer", "calls without a token in flight per host"),
    ):
        parser.add_argument(
            flag,
            type=int,
            default=None,
            metavar="N",
            help=f"{what} (default ${ADMISSION_ENV[attr]} or {getattr(limits, attr)}); more: RESOURCE_EXHAUSTED",
        )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve without a bearer token (also SMF_ALLOW_NO_AUTH=1); never on a shared network",
    )
    add_store_argument(parser)


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """`run_server` keyword arguments from the flags of `add_server_arguments`."""
    return {
        "port": args.port,
        "metrics_port": None if args.metrics_port < 0 else args.metrics_port,
        "host": args.host,
        "grace": args.grace,
        "allow_insecure": args.insecure,
        "admission": AdmissionLimits.from_env(
            total=args.max_concurrent,
            per_client=args.max_concurrent_per_client,
            anonymous_total=args.max_anonymous,
            anonymous_per_peer=args.max_anonymous_per_peer,
        ),
    }


def add_gan_targets_argument(parser: argparse.ArgumentParser) -> None:
    """`--gan HOST:PORT …`: the GAN service replicas a service renders with (grid, som).

    The default comes from $SMF_GAN_TARGETS (comma-separated), so a deployment sets it once for every service.
    """
    parser.add_argument(
        "--gan",
        nargs="+",
        metavar="HOST:PORT",
        default=(os.environ.get("SMF_GAN_TARGETS") or "localhost:50051").split(","),
        help="GAN service replicas to render with (default $SMF_GAN_TARGETS or localhost:50051)",
    )


def gan_token(server_token: str | None) -> str | None:
    """The token a service sends to its GAN replicas: $SMF_GAN_TOKEN where they have their own, else its own."""
    return os.environ.get("SMF_GAN_TOKEN") or server_token
