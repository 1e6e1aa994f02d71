"""Listen addresses: parsing ``host:port``, writing it back, and saying why a bind failed.

No ``grpc`` import here: the plugin checks ``[plugins.grpc] listen`` when it is configured,
before gRPC is loaded.
"""

from __future__ import annotations

import errno
import socket

from worker_core.plugin import ConfigError


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:50051`` for IPv6) into its parts; ConfigError if malformed."""
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"listen address {address!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:50051``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_failure(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on, found by trying it with a plain socket.

    gRPC only says that the bind failed (its reason goes to its own log, which is off); the
    kernel's answer to the same bind names the cause. The probe sets SO_REUSEADDR as gRPC
    does, so a port whose old connections linger in TIME_WAIT is not reported as taken.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    reason = "gRPC could not bind it"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            reason = _why(exc)
    return reason


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another server listens there)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this host"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)
