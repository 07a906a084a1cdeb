"""Client side of the server base: authenticated channels, retries for idempotent calls, following operations.

    channel = connect("localhost:50051")                         # token from $SMF_TOKEN
    stub = gan_pb2_grpc.GanServiceStub(channel)
    models = call(stub.ListModels, gan_pb2.ListModelsRequest(), idempotent=True)
    op = call(stub.StartTrain, request).operation
    op = wait_operation(channel, op.id, on_progress=lambda op: print(op.progress.step))   # raises if it failed

Errors come back as the matching `SmfError` (NotFound, InvalidArgument, ...), so callers and the CLI handle remote
and local failures the same way.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import grpc
from smf.common import errors
from smf.common.v1 import common_pb2, operations_pb2, operations_pb2_grpc

DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 8 << 20
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# InvalidArgument is in the table for its code but built with its field (see error_from_status)
_ERROR_CLASSES: dict[grpc.StatusCode, type[errors.SmfError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.PermissionDenied,
        errors.Unauthenticated,
        errors.Cancelled,
        errors.DataCorruption,
    )
}


def error_from_status(code: grpc.StatusCode | int, message: str) -> errors.SmfError:
    """The SmfError for a status code (an int is a google.rpc.Code number, as in OperationError.code)."""
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    cls = _ERROR_CLASSES.get(code)
    if cls is errors.InvalidArgument:
        field, sep, rest = message.partition(": ")  # the server formats "field: message"
        return errors.InvalidArgument(field, rest) if sep else errors.InvalidArgument("request", message)
    if cls is not None:
        return cls(message)
    exc = errors.SmfError(message or code.name)
    exc.code = code  # keep INTERNAL / DEADLINE_EXCEEDED / ... visible to the caller
    return exc


def error_from_rpc(exc: grpc.RpcError) -> errors.SmfError:
    return error_from_status(exc.code(), exc.details() or "")


class _AuthDeadline(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call, and a default deadline to calls with one response.

    Streamed responses (watching an operation, downloading) get no default deadline: they are long by nature;
    callers pass `timeout=` when they want one.
    """

    def __init__(self, token: str | None, default_timeout: float | None):
        self.token, self.default_timeout = token, default_timeout

    def _details(self, details, *, unary_response: bool):
        metadata = list(details.metadata or ())
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        timeout = details.timeout
        if timeout is None and unary_response:
            timeout = self.default_timeout
        return _CallDetails(
            details.method,
            timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details, unary_response=True), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details, unary_response=False), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details, unary_response=True), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details, unary_response=False), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def _channel_credentials(tls: bool | None) -> grpc.ChannelCredentials | None:
    """TLS when asked or when $SMF_TLS_CA is set; a client cert from $SMF_TLS_CLIENT_CERT/_KEY enables mTLS."""
    ca = os.environ.get("SMF_TLS_CA")
    if tls is False or (tls is None and not ca):
        return None

    def read(name):
        return Path(os.environ[name]).read_bytes() if os.environ.get(name) else None

    return grpc.ssl_channel_credentials(
        root_certificates=read("SMF_TLS_CA"),
        private_key=read("SMF_TLS_CLIENT_KEY"),
        certificate_chain=read("SMF_TLS_CLIENT_CERT"),
    )


def connect(
    target: str, *, token: str | None = None, tls: bool | None = None, default_timeout: float | None = DEFAULT_TIMEOUT
) -> grpc.Channel:
    """A sync channel to an smf service that authenticates every call (token defaults to $SMF_TOKEN)."""
    token = token or os.environ.get("SMF_TOKEN") or None
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    creds = _channel_credentials(tls)
    channel = grpc.secure_channel(target, creds, options) if creds else grpc.insecure_channel(target, options)
    return grpc.intercept_channel(channel, _AuthDeadline(token, default_timeout))


def call(
    method: Callable,
    request,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    idempotent: bool = False,
    retries: int = 3,
    backoff: float = 0.2,
):
    """Call a unary stub method with a deadline; retry idempotent calls on UNAVAILABLE / DEADLINE_EXCEEDED.

    Non-idempotent calls (Start..., Upload) are never retried: a lost reply does not mean the work did not start.
    Failures raise the matching SmfError.
    """
    attempt = 0
    while True:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            if not (idempotent and exc.code() in RETRYABLE and attempt < retries):
                raise error_from_rpc(exc) from None
        attempt += 1
        # exponential backoff with full jitter, so restarted clients do not stampede a recovering server
        time.sleep(random.uniform(0, backoff * 2 ** (attempt - 1)))


def wait_operation(
    channel: grpc.Channel,
    op_id: str,
    on_progress: Callable | None = None,
    timeout: float | None = None,
    *,
    retries: int = 5,
) -> common_pb2.Operation:
    """Follow an operation (WatchOperation) until it is done; returns it, or raises the SmfError it failed with.

    `on_progress(op)` sees every update. A dropped stream (server restart, proxy timeout) is re-opened: watching
    is idempotent. `timeout` bounds the whole wait (DEADLINE_EXCEEDED as an SmfError).
    """
    stub = operations_pb2_grpc.OperationServiceStub(channel)
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = 0
    op = None
    while True:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        try:
            for response in stub.WatchOperation(
                operations_pb2.WatchOperationRequest(operation_id=op_id), timeout=remaining
            ):
                op = response.operation
                failures = 0
                if on_progress is not None:
                    on_progress(op)
                if op.done:
                    return _outcome(op)
            # the server ended the stream without a final state (shutting down): look again
        except grpc.RpcError as exc:
            expired = deadline is not None and time.monotonic() >= deadline
            if exc.code() not in RETRYABLE or expired or failures >= retries:
                raise error_from_rpc(exc) from None
        failures += 1
        time.sleep(min(0.2 * 2**failures, 5.0))


def _outcome(op: common_pb2.Operation) -> common_pb2.Operation:
    if op.state == common_pb2.Operation.STATE_SUCCEEDED:
        return op
    if op.state == common_pb2.Operation.STATE_CANCELLED:
        raise errors.Cancelled(op.error.message or f"operation {op.id} was cancelled")
    raise error_from_status(
        op.error.code or grpc.StatusCode.UNKNOWN.value[0], op.error.message or f"operation {op.id} failed"
    )


class ServiceClient:
    """Base of the public service clients: one authenticated channel, the service's stub, `wait` for operations,
    and `close` / `with`. A subclass names its stub and adds the service's calls:

        class SomClient(ServiceClient):
            stub_class = som_pb2_grpc.SomServiceStub

            def get(self, linearization_id): return call(self.stub.GetLinearization, ...)

    `target` is host:port, or a channel the caller already has (closed with the client).
    """

    stub_class: Callable[[grpc.Channel], Any]

    def __init__(self, target: str | grpc.Channel, *, token: str | None = None, tls: bool | None = None):
        self.channel = connect(target, token=token, tls=tls) if isinstance(target, str) else target
        self.stub = self.stub_class(self.channel)

    def wait(self, op_id: str, on_progress: Callable | None = None, timeout: float | None = None):
        """Follow an operation to its end; returns it or raises the error it failed with."""
        return wait_operation(self.channel, op_id, on_progress=on_progress, timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
