"""The one table from domain errors to gRPC status codes.

Anything not in the table is a bug on our side: the client gets INTERNAL with a generic
message (never UNKNOWN, never a traceback) and the server logs the exception. A call this
server does not serve (yet) raises ``NotImplementedError``, as the generated base servicer
does: UNIMPLEMENTED, which a client reads as "this server does not support this request".
"""

from __future__ import annotations

import grpc

from worker_core.plugin import (
    EngineClosed,
    FailedPrecondition,
    InvalidSpec,
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
    StoreUnavailable,
)

#: Most specific first: the first class the error is an instance of decides.
STATUS_TABLE: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidSpec, grpc.StatusCode.INVALID_ARGUMENT),  # AmbiguousJobId too: it lists candidates
    (JobNotFound, grpc.StatusCode.NOT_FOUND),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (EngineClosed, grpc.StatusCode.FAILED_PRECONDITION),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),  # a read while the store cannot answer
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
)

#: What the client reads for an error outside the table.
INTERNAL_MESSAGE = "internal server error (logged on the server)"

#: Trailing metadata key naming the offending field of an INVALID_ARGUMENT answer.
FIELD_METADATA_KEY = "worker-field"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status and message for a domain error; None if it is not one (a bug: INTERNAL)."""
    for cls, code in STATUS_TABLE:
        if isinstance(exc, cls):
            return code, str(exc)
    return None
