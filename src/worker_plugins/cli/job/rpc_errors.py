"""The one table from a gRPC status to a one-line message and an exit code (see :mod:`.errors`).

A refusal of a spec (INVALID_ARGUMENT) names the field in its trailing metadata
(``worker-field``); the message is then put in the terms of the flag that set it.
"""

from __future__ import annotations

import re

import grpc

from .errors import EXIT_REFUSED, EXIT_TIMEOUT, EXIT_UNAVAILABLE, ClientError

#: Trailing metadata naming the offending field of an INVALID_ARGUMENT answer (the server's
#: ``grpc_transport.errors.FIELD_METADATA_KEY``).
FIELD_METADATA_KEY = "worker-field"

#: Status -> (message template, exit code). ``{details}`` is the server's message,
#: ``{server}`` the address dialled. UNAVAILABLE is refined by :func:`_unavailable`.
STATUS_TABLE: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.NOT_FOUND: ("{details}", EXIT_REFUSED),  # the server says "no such job: ID"
    grpc.StatusCode.PERMISSION_DENIED: ("permission denied: {details}", EXIT_REFUSED),
    grpc.StatusCode.UNAUTHENTICATED: ("not authenticated: {details}", EXIT_REFUSED),
    grpc.StatusCode.INVALID_ARGUMENT: ("{details}", EXIT_REFUSED),
    grpc.StatusCode.FAILED_PRECONDITION: ("{details}", EXIT_REFUSED),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("refused by the server: {details}", EXIT_REFUSED),
    grpc.StatusCode.INTERNAL: ("the server failed: {details}", EXIT_REFUSED),
    grpc.StatusCode.UNIMPLEMENTED: (
        "the server at {server} does not support this request (is it an older version?)",
        EXIT_REFUSED,
    ),
    grpc.StatusCode.CANCELLED: ("the request was cancelled: {details}", EXIT_REFUSED),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "no answer from the server at {server} in time",
        EXIT_TIMEOUT,
    ),
    grpc.StatusCode.UNAVAILABLE: ("cannot reach server at {server}: {details}", EXIT_UNAVAILABLE),
}

# gRPC core wraps the cause in layers ("failed to connect to all addresses; last error:
# UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"); these
# patterns recognise the causes a user can act on.
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)")
_PEER_NAME = re.compile(r"Peer name (\S+) is not in peer certificate")
_LAYERS = re.compile(
    r"^(failed to connect to all addresses; last error: )?(\w+: )?(ipv[46]:\S+: )?"
)


def _unavailable(details: str, server: str) -> tuple[str, int]:
    """The message for UNAVAILABLE: what went wrong while connecting, in the user's terms."""
    verify = _VERIFY_FAILED.search(details)
    if verify:
        return (
            f"TLS handshake with {server} failed: the server's certificate is not trusted "
            f"({verify[1].strip()}); is --ca the CA that issued it?",
            EXIT_UNAVAILABLE,
        )
    peer = _PEER_NAME.search(details)
    if peer:
        return (
            f"TLS handshake with {server} failed: the server's certificate is not valid for "
            f"the name {peer[1]}",
            EXIT_UNAVAILABLE,
        )
    if "handshake" in details.lower():
        return f"TLS handshake with {server} failed: {details}", EXIT_UNAVAILABLE
    if details.endswith("Socket closed") and "failed to connect" in details:
        # The server hung up during the handshake: it refused our certificate. It cannot say
        # why over TLS; the usual reasons are listed instead.
        return (
            f"the server at {server} refused the connection during the TLS handshake: "
            "is the client certificate issued by the server's CA and not expired?",
            EXIT_UNAVAILABLE,
        )
    if "Domain name not found" in details or "DNS resolution failed" in details:
        return f"cannot reach server at {server}: unknown host", EXIT_UNAVAILABLE
    cause = _LAYERS.sub("", details, count=1)
    cause = cause.removeprefix("Failed to connect to remote host: ")
    return f"cannot reach server at {server}: {cause[:1].lower()}{cause[1:]}", EXIT_UNAVAILABLE


def _field(error: grpc.RpcError) -> str | None:
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == FIELD_METADATA_KEY:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def from_rpc_error(error: grpc.RpcError, server: str) -> ClientError:
    """The :class:`ClientError` for a failed call to ``server``."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details: str = (error.details() if hasattr(error, "details") else None) or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        message, exit_code = _unavailable(details, server)
        return ClientError(message, exit_code, status=code.name)
    template, exit_code = STATUS_TABLE.get(
        code, (f"{code.name.lower()} from the server: {{details}}", EXIT_REFUSED)
    )
    return ClientError(
        template.format(details=details or code.name.lower(), server=server),
        exit_code,
        status=code.name,
        field=_field(error) if code is grpc.StatusCode.INVALID_ARGUMENT else None,
    )
