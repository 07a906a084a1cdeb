"""The interceptors every smf server runs its handlers through: metrics, admission, bearer-token auth, errors.

    server = grpc.aio.server(interceptors=[MetricsInterceptor("gan"), AdmissionInterceptor(token, limits),
                                           AuthInterceptor(token), ErrorInterceptor(max_message_bytes)])

Every handler (unary or streaming, async or plain `def`) gets the same treatment: raising an `SmfError` becomes its
status code, anything else becomes INTERNAL with the traceback logged, request bytes that do not parse become
INVALID_ARGUMENT, a request message above the limit RESOURCE_EXHAUSTED. Plain `def` handlers run in worker threads
so CPU-heavy work (rendering audio) does not stall the event loop. `smf.common.server.start_server` installs them;
nothing else needs this module.

Metrics come first so that every call is counted with its final code, the ones refused before a handler included:
admission (RESOURCE_EXHAUSTED), auth (UNAUTHENTICATED), a message too big or unparsable, a client that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import prometheus_client
from google.protobuf.message import DecodeError
from smf.common.admission import Admission, AdmissionLimits, Client
from smf.common.errors import SmfError

log = logging.getLogger("smf.server")

__all__ = ["AUTH_EXEMPT_PREFIXES", "AdmissionInterceptor", "AuthInterceptor", "ErrorInterceptor", "MetricsInterceptor"]

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


def _wrap_handler(
    handler: grpc.RpcMethodHandler, hook: Hook | None = None, *, prepare=None, request_deserializer=None
) -> grpc.RpcMethodHandler:
    """A copy of `handler` whose behaviour runs inside `hook(context)` (for streams: around the whole stream).

    `prepare(request, context)` (async) turns the request (for request streams: the iterator) into what the behaviour
    gets; `request_deserializer` replaces the handler's."""
    req_s, resp_s = handler.request_streaming, handler.response_streaming
    kind = _rpc_kind(handler)
    behavior = _asyncify(getattr(handler, kind), req_s, resp_s)
    hook = hook or (lambda context: contextlib.nullcontext())
    prepare = prepare or _as_given

    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def wrapped(request, context):
            async with hook(context):
                async for item in behavior(await prepare(request, context), context):
                    yield item
    else:  # coroutine: unary response, or a streaming handler that writes with context.write

        @functools.wraps(behavior)
        async def wrapped(request, context):
            async with hook(context):
                return await behavior(await prepare(request, context), context)

    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    return factory(
        wrapped,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _as_given(request, context):
    return request


class _Unparsable:
    """Stands in for a request that cannot be handled (bytes that are not protobuf, a message above the limit), so
    the handler wrapper can answer for it with `code`."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        self.message, self.code = message, code


def _guard_parsing(handler: grpc.RpcMethodHandler, max_message_bytes: int | None = None) -> grpc.RpcMethodHandler:
    """A copy of `handler` that answers INVALID_ARGUMENT for request bytes that do not parse and RESOURCE_EXHAUSTED
    for a request message above `max_message_bytes`.

    grpc runs the request deserializer itself, before any smf code: a DecodeError there becomes UNKNOWN (unary
    requests) or escapes the handler's request iterator as INTERNAL (streams), and a message over grpc's own limit
    never reaches a handler at all (so no metric sees it). So the deserializer hands over an `_Unparsable` instead
    of raising, and the behaviour aborts when it sees one (for request streams: when the iterator yields it, so
    messages before it are handled normally).
    """
    deserializer = handler.request_deserializer
    if deserializer is None and max_message_bytes is None:
        return handler
    # generated handlers pass `SomeRequest.FromString`; the class names the message in the error
    type_name = getattr(getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None), "full_name", "request")

    def safe_deserialize(data: bytes):
        if max_message_bytes is not None and len(data) > max_message_bytes:
            return _Unparsable(
                f"request: a {type_name} message of {len(data)} bytes is above the {max_message_bytes}-byte limit; "
                "send big data in chunks (streams) or as a store URI",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        if deserializer is None:  # a raw-bytes handler
            return data
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Unparsable(f"request: could not parse {type_name}: {exc}")

    async def parsed(request, context):
        if isinstance(request, _Unparsable):
            await context.abort(request.code, request.message)
        return request

    async def parsed_stream(requests, context):
        async for request in requests:
            yield await parsed(request, context)

    async def prepare(request, context):
        return parsed_stream(request, context) if handler.request_streaming else await parsed(request, context)

    return _wrap_handler(handler, prepare=prepare, request_deserializer=safe_deserialize)


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
                # a call already over (done) could not get our status: its client cancelled or its deadline passed
                code = grpc.StatusCode.CANCELLED if context.done() else grpc.StatusCode.UNKNOWN
                raise
            finally:
                IN_FLIGHT.labels(*labels).dec()
                LATENCY.labels(*labels).observe(time.perf_counter() - start)
                REQUESTS.labels(*labels, _code_name(code)).inc()

        return _wrap_handler(handler, observe)


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def _bearer_ok(metadata, expected: bytes) -> bool:
    """Whether `metadata` carries `authorization: <expected>` (expected = b"Bearer <token>")."""
    presented = next((v for k, v in (metadata or ()) if k == "authorization"), None)
    if presented is None:
        return False
    presented = presented.encode() if isinstance(presented, str) else presented
    return hmac.compare_digest(presented, expected)  # constant time: no token guessing by timing


def _metadata_size(metadata) -> int:
    """Bytes of request metadata the way HTTP/2 counts a header list: name + value + 32 per entry."""
    return sum(len(k) + len(v) + 32 for k, v in (metadata or ()))


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call with RESOURCE_EXHAUSTED when its client has too many in flight (see `smf.common.admission`).

    Callers with the token (every caller, when `token` is None: auth is off) and anonymous calls (health and
    reflection without the token) draw on separate budgets, so tokenless traffic never takes a caller's slot. The
    client is known only inside the call (`context.peer()`), so the check runs as the handler starts; a refused call
    costs a coroutine and an abort, nothing more. Request metadata above `max_metadata_bytes` is refused here too,
    so that it is counted (grpc's own limit would refuse it before any metric sees it). This replaces grpc's
    `maximum_concurrent_rpcs`, which refused everyone alike once anyone had filled it.
    """

    def __init__(
        self, token: str | None, limits: AdmissionLimits | None = None, *, max_metadata_bytes: int | None = None
    ):
        self._expected = f"Bearer {token}".encode() if token else None
        self.gate = Admission(limits or AdmissionLimits())
        self.max_metadata_bytes = max_metadata_bytes

    def _trusted(self, details) -> bool:
        if self._expected is None:  # no auth: health still counts as anonymous, so probes keep their own budget
            return not details.method.startswith(AUTH_EXEMPT_PREFIXES)
        return _bearer_ok(details.invocation_metadata, self._expected)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        trusted = self._trusted(details)
        metadata_bytes = _metadata_size(details.invocation_metadata)

        @contextlib.asynccontextmanager
        async def admit(context):
            if self.max_metadata_bytes is not None and metadata_bytes > self.max_metadata_bytes:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"request metadata of {metadata_bytes} bytes is above the {self.max_metadata_bytes}-byte limit",
                )
            client = Client.of(peer=context.peer(), trusted=trusted)
            refused = self.gate.enter(client)
            if refused is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
            try:
                yield
            finally:
                self.gate.leave(client)

        return _wrap_handler(handler, admit)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC except health and reflection."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(AUTH_EXEMPT_PREFIXES):
            return handler
        if _bearer_ok(details.invocation_metadata, self._expected):
            return handler
        missing = not any(k == "authorization" for k, _ in (details.invocation_metadata or ()))

        @contextlib.asynccontextmanager
        async def deny(context):
            reason = "missing 'authorization: Bearer <token>' metadata" if missing else "invalid bearer token"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            yield  # not reached: abort raises

        return _wrap_handler(handler, deny)


async def _answer(context, code: grpc.StatusCode, message: str) -> None:
    """End the call with `code`; raises AbortError as `context.abort` does, or CancelledError when the call is over.

    A client that cancels a request stream looks to the handler like one that stopped sending: the handler then
    answers (say, INVALID_ARGUMENT for a short upload) to a call grpc has already finished, and sending the status
    fails. That call was cancelled, not the client's mistake, and must count as such."""
    try:
        await context.abort(code, message)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:  # cygrpc's ExecuteBatchError: no status can go out any more
        raise asyncio.CancelledError(f"the call ended before its status ({code.name}) could be sent") from exc


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping a handler into status codes: SmfError -> its code, anything else -> INTERNAL;
    request bytes that do not parse -> INVALID_ARGUMENT, a request message above `max_message_bytes` (None: no
    check) -> RESOURCE_EXHAUSTED."""

    def __init__(self, max_message_bytes: int | None = None):
        self.max_message_bytes = max_message_bytes

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
                await _answer(context, exc.code, exc.message)
            except Exception:
                log.exception("internal error in %s", method)
                await _answer(context, grpc.StatusCode.INTERNAL, f"internal error in {method} (see server log)")

        return _wrap_handler(_guard_parsing(handler, self.max_message_bytes), map_errors)
