"""The user-facing error hierarchy of smf, and the gRPC status code each one maps to.

Pure code raises these; servers turn them into status codes (see `grpc_code`), the CLI prints them.
User mistakes must never surface as INTERNAL:

    raise InvalidArgument("d0", "must be >= 2, got 1")
"""

from __future__ import annotations

import grpc


class SmfError(Exception):
    """Base of every error smf raises on purpose. `code` is the gRPC status it maps to."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(SmfError):
    """Bad input from the caller. `field` names the request field, config key or file at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(SmfError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SmfError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SmfError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SmfError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SmfError):
    """A dependency (store, another service) is down; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(SmfError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(SmfError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Cancelled(SmfError):
    code = grpc.StatusCode.CANCELLED


class DataCorruption(SmfError):
    """Stored bytes do not match their recorded sha256."""

    code = grpc.StatusCode.DATA_LOSS


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception: ours map by class, anything else is a bug (INTERNAL)."""
    return exc.code if isinstance(exc, SmfError) else grpc.StatusCode.INTERNAL
