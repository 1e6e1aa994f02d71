"""The transport's settings: section ``[plugins.https]`` of the config file."""

from __future__ import annotations

from typing import Any

import attrs

#: ``min_tls`` values and what each allows.
TLS_VERSIONS = ("1.3", "1.2")


def _at_least_one(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _tls_version(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in TLS_VERSIONS:
        raise ValueError(
            f"{attribute.name} must be one of {', '.join(TLS_VERSIONS)}, got {value!r}"
        )


@attrs.frozen
class HttpsConfig:
    """``[plugins.https]``::

    listen = "127.0.0.1:8443"
    ca = "certs/ca.pem"
    cert = "certs/server.pem"
    key = "certs/server.key"
    min_tls = "1.3"
    """

    #: host:port to listen on ("[::1]:8443" for IPv6; port 0 picks a free one).
    listen: str = "127.0.0.1:8443"
    #: The CA client certificates must chain to, and the server's own certificate and key.
    #: Relative paths are relative to the config file's directory.
    ca: str = "certs/ca.pem"
    cert: str = "certs/server.pem"
    key: str = "certs/server.key"
    #: Oldest TLS version accepted: "1.3", or "1.2" (then only ECDHE key exchange with AEAD
    #: ciphers: AES-GCM, ChaCha20-Poly1305).
    min_tls: str = attrs.field(default="1.3", validator=_tls_version)
    #: Largest request body accepted (a job spec's strings are capped at 1 MiB by the engine);
    #: more is refused with 413 before it is read.
    max_body_bytes: int = attrs.field(default=4 << 20, validator=_at_least_one)
    #: Longest request line and longest header line; longer ones are refused with 400.
    max_header_bytes: int = attrs.field(default=8190, validator=_at_least_one)
    #: Most header lines in one request.
    max_headers: int = attrs.field(default=64, validator=_at_least_one)
    #: Seconds a client may take for the TLS handshake.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Seconds a connection may stay without a complete request (a client that sends its
    #: headers slowly included) before it is closed.
    idle_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds a client may take to send a request body.
    body_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds a streamed response may wait for the client to take more bytes; a follower
    #: that reads nothing for this long is dropped (its job and other followers go on).
    write_timeout: float = attrs.field(default=60.0, validator=_positive)
    #: Concurrent output and event streams one client certificate CN may hold; more are
    #: refused with 429, so followers can never crowd out submit and stop.
    max_streams_per_client: int = attrs.field(default=64, validator=_at_least_one)
    #: Seconds between keep-alive comments on a quiet event stream (so proxies and browsers
    #: keep it open, and a vanished client is noticed at the next write).
    heartbeat_seconds: float = attrs.field(default=15.0, validator=_positive)
