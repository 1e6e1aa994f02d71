"""Client errors: the one table from a gRPC status to a one-line message and an exit code.

Every failure the client can meet ends as a :class:`ClientError`, which the commands print as
one line on stderr (``worker job: error: ...``) before exiting with its code. Exit codes
follow sysexits(3) loosely, so a script can tell "the server said no" from "there was no
server" from "my own setup is wrong":

====  ==========================================================================
1     the server refused or failed the request (not found, denied, invalid...)
69    the server cannot be reached, or the TLS handshake failed
75    the server did not answer in time
78    the client's own configuration: missing or unreadable certificate files,
      a bad client config file, no certificate configured
====  ==========================================================================
"""

from __future__ import annotations

import re

import grpc

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 69
EXIT_TIMEOUT = 75
EXIT_CONFIG = 78


class ClientError(Exception):
    """A failure to report to the user as one line, and the process exit code for it."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


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


def from_rpc_error(error: grpc.RpcError, server: str) -> ClientError:
    """The :class:`ClientError` for a failed call to ``server``."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details: str = (error.details() if hasattr(error, "details") else None) or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        message, exit_code = _unavailable(details, server)
        return ClientError(message, exit_code)
    template, exit_code = STATUS_TABLE.get(
        code, (f"{code.name.lower()} from the server: {{details}}", EXIT_REFUSED)
    )
    return ClientError(
        template.format(details=details or code.name.lower(), server=server), exit_code
    )
