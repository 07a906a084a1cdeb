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

Every handler (unary or streaming, async or plain `def`) gets the same treatment: raising an `SmfError` becomes its
status code, anything else becomes INTERNAL with the traceback logged. Plain `def` handlers run in worker threads so
CPU-heavy work (rendering audio) does not stall the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hmac
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import grpc
import prometheus_client
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from smf.common.errors import FailedPrecondition, SmfError
from smf.common.store_cli import add_store_argument

log = logging.getLogger("smf.server")

MAX_MESSAGE_BYTES = 8 << 20  # audio travels in chunks well below this; a bigger message is a client bug
MAX_CONCURRENT_RPCS = 256  # beyond this grpc answers RESOURCE_EXHAUSTED instead of queueing without bound
DEFAULT_GRACE_S = 10.0
READINESS_INTERVAL_S = 5.0  # how often health rechecks that the service can serve
FIRST_READINESS_WAIT_S = 10.0  # how long start_server waits for the first check before returning NOT_SERVING
READINESS_PROBE_KEY = "readiness-probe"  # a key nobody writes: reading its metadata proves the store answers

# Methods anyone may call: load balancers and grpcurl must work without the token.
AUTH_EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# Module-level metrics: prometheus_client's default registry allows each name once per process, and tests run
# several servers in one process; the `server` label tells them apart.
_LABELS = ("server", "grpc_service", "grpc_method", "grpc_type")
REQUESTS = prometheus_client.Counter(
    "smf_grpc_server_handled", "RPCs completed, by method and status code", _LABELS + ("grpc_code",)
)
LATENCY = prometheus_client.Histogram(
    "smf_grpc_server_handling_seconds",
    "RPC latency (whole stream for streaming RPCs)",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf")),
)
IN_FLIGHT = prometheus_client.Gauge("smf_grpc_server_in_flight", "RPCs being handled now", _LABELS)

Hook = Callable[[grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager]


# ---- handler wrapping ---------------------------------------------------------------------------------------


def _sync_iter(aiterator, loop: asyncio.AbstractEventLoop):
    """A plain iterator over an async one, for `def` handlers of client-streaming RPCs running in a thread."""
    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(aiterator.__anext__(), loop).result()
        except StopAsyncIteration:
            return


def _asyncify(behavior: Callable, request_streaming: bool, response_streaming: bool) -> Callable:
    """The handler as a coroutine function (unary response) or async generator function (streamed response)."""
    if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
        return behavior

    def adapt(request, loop):
        return _sync_iter(request, loop) if request_streaming else request

    if not response_streaming:

        async def unary(request, context):
            return await asyncio.to_thread(behavior, adapt(request, asyncio.get_running_loop()), context)

        return unary

    async def stream(request, context):
        loop, done = asyncio.get_running_loop(), object()
        it = await asyncio.to_thread(lambda: iter(behavior(adapt(request, loop), context)))
        while (item := await asyncio.to_thread(next, it, done)) is not done:
            yield item

    return stream


def _rpc_kind(handler: grpc.RpcMethodHandler) -> str:
    return {
        (False, False): "unary_unary",
        (False, True): "unary_stream",
        (True, False): "stream_unary",
        (True, True): "stream_stream",
    }[(handler.request_streaming, handler.response_streaming)]


def _wrap_handler(handler: grpc.RpcMethodHandler, hook: Hook) -> grpc.RpcMethodHandler:
    """A copy of `handler` whose behaviour runs inside `hook(context)` (for streams: around the whole stream)."""
    req_s, resp_s = handler.request_streaming, handler.response_streaming
    kind = _rpc_kind(handler)
    behavior = _asyncify(getattr(handler, kind), req_s, resp_s)

    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def wrapped(request, context):
            async with hook(context):
                async for item in behavior(request, context):
                    yield item
    else:  # coroutine: unary response, or a streaming handler that writes with context.write

        @functools.wraps(behavior)
        async def wrapped(request, context):
            async with hook(context):
                return await behavior(request, context)

    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    return factory(
        wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class _Unparsable:
    """Stands in for a request whose bytes are not valid protobuf, so the handler wrapper can answer for it."""

    def __init__(self, message: str):
        self.message = message


def _guard_parsing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A copy of `handler` that answers INVALID_ARGUMENT for request bytes that do not parse.

    grpc runs the request deserializer itself, before any smf code: a DecodeError there becomes UNKNOWN (unary
    requests) or escapes the handler's request iterator as INTERNAL (streams). So the deserializer hands over an
    `_Unparsable` instead of raising, and the behaviour aborts when it sees one (for request streams: when the
    iterator yields it, so messages before it are handled normally).
    """
    deserializer = handler.request_deserializer
    if deserializer is None:
        return handler
    # generated handlers pass `SomeRequest.FromString`; the class names the message in the error
    type_name = getattr(getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None), "full_name", "request")

    def safe_deserialize(data: bytes):
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Unparsable(f"request: could not parse {type_name}: {exc}")

    async def parsed(request, context):
        if isinstance(request, _Unparsable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return request

    async def parsed_stream(requests, context):
        async for request in requests:
            yield await parsed(request, context)

    req_s, resp_s = handler.request_streaming, handler.response_streaming
    kind = _rpc_kind(handler)
    behavior = _asyncify(getattr(handler, kind), req_s, resp_s)

    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def wrapped(request, context):
            request = parsed_stream(request, context) if req_s else await parsed(request, context)
            async for item in behavior(request, context):
                yield item
    else:

        @functools.wraps(behavior)
        async def wrapped(request, context):
            request = parsed_stream(request, context) if req_s else await parsed(request, context)
            return await behavior(request, context)

    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    return factory(wrapped, request_deserializer=safe_deserialize, response_serializer=handler.response_serializer)


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


# ---- interceptors -------------------------------------------------------------------------------------------


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC by method and final status code, times it, and tracks how many are in flight."""

    def __init__(self, server_name: str):
        self.server_name = server_name

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        service, method = _split_method(details.method)
        rpc_type = (
            ("client_stream" if handler.request_streaming else "unary")
            if not handler.response_streaming
            else ("bidi_stream" if handler.request_streaming else "server_stream")
        )
        labels = (self.server_name, service, method, rpc_type)

        @contextlib.asynccontextmanager
        async def observe(context):
            IN_FLIGHT.labels(*labels).inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                yield
                code = context.code() or grpc.StatusCode.OK  # a handler may set_code() and return
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except (asyncio.CancelledError, GeneratorExit):  # the client went away or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                IN_FLIGHT.labels(*labels).dec()
                LATENCY.labels(*labels).observe(time.perf_counter() - start)
                REQUESTS.labels(*labels, _code_name(code)).inc()

        return _wrap_handler(handler, observe)


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC except health and reflection."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def _authorized(self, metadata) -> bool:
        presented = next((v for k, v in (metadata or ()) if k == "authorization"), None)
        if presented is None:
            return False
        presented = presented.encode() if isinstance(presented, str) else presented
        return hmac.compare_digest(presented, self._expected)  # constant time: no token guessing by timing

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(AUTH_EXEMPT_PREFIXES):
            return handler
        if self._authorized(details.invocation_metadata):
            return handler
        missing = not any(k == "authorization" for k, _ in (details.invocation_metadata or ()))

        @contextlib.asynccontextmanager
        async def deny(context):
            reason = "missing 'authorization: Bearer <token>' metadata" if missing else "invalid bearer token"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            yield  # not reached: abort raises

        return _wrap_handler(handler, deny)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping a handler into status codes: SmfError -> its code, anything else -> INTERNAL;
    request bytes that do not parse -> INVALID_ARGUMENT."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method

        @contextlib.asynccontextmanager
        async def map_errors(context):
            try:
                yield
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except SmfError as exc:
                await context.abort(exc.code, exc.message)
            except Exception:
                log.exception("internal error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method} (see server log)")

        return _wrap_handler(_guard_parsing(handler), map_errors)


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
    health: health.aio.HealthServicer
    service_names: list[str]
    _metrics_http: Any = None
    _on_stop: list[Callable[[], Any]] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)
    _readiness: Readiness | None = None
    _stopped: bool = False

    @property
    def ready(self) -> bool:
        """Whether health says SERVING now (the last readiness check passed)."""
        return self._readiness is None or self._readiness.ok

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
    max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    on_stop: Sequence[Callable[[], Any]] = (),
    readiness_interval: float = READINESS_INTERVAL_S,
) -> ServerHandle:
    """Start serving `servicers` (pairs of generated `add_XServicer_to_server` and an instance); port 0 = free port.

    `token` defaults to $SMF_TOKEN; without one the server refuses to start unless `allow_insecure` (or
    $SMF_ALLOW_NO_AUTH=1). `metrics_port` 0 picks a free port, None serves no metrics. Health follows the servicers'
    `ready()` checks every `readiness_interval` seconds (see the module docstring); their `close()` runs at shutdown
    after the grace period. `on_stop` callables run at shutdown before the grace period (for what is not a
    servicer); plain ones run in a worker thread, so they may block.
    """
    required = resolve_token(token, allow_insecure)
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(name)]
    if required:
        interceptors.append(AuthInterceptor(required))
    interceptors.append(ErrorInterceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )  # port 0 must really be free, not shared with a stale server
    for add, servicer in servicers:
        add(servicer, server)

    health_servicer = health.aio.HealthServicer()
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
        return self.handle.port

    @property
    def metrics_port(self) -> int | None:
        return self.handle.metrics_port

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
