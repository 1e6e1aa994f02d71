"""The transport's settings: section ``[plugins.grpc]`` of the config file; flags win."""

from __future__ import annotations

from typing import Any

import attrs


def _at_least_one(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


@attrs.frozen
class GrpcConfig:
    """``[plugins.grpc]``::

    listen = "127.0.0.1:50051"
    ca = "certs/ca.pem"
    cert = "certs/server.pem"
    key = "certs/server.key"
    max_streams_per_client = 64
    """

    #: host:port to listen on ("[::1]:50051" for IPv6).
    listen: str = "127.0.0.1:50051"
    #: The CA client certificates must chain to, and the server's own certificate and key.
    #: Relative paths are relative to the config file's directory (flags: to the current one).
    ca: str = "certs/ca.pem"
    cert: str = "certs/server.pem"
    key: str = "certs/server.key"
    #: Concurrent Tail and Watch streams one client certificate CN may hold; more are refused
    #: with RESOURCE_EXHAUSTED, so followers can never crowd out submit and stop.
    max_streams_per_client: int = attrs.field(default=64, validator=_at_least_one)
    #: Largest request accepted (a job spec is capped by the engine at 1 MiB of strings).
    max_request_bytes: int = attrs.field(default=4 << 20, validator=_at_least_one)
    #: Largest response sent (List of many jobs); clients must accept this much too.
    max_response_bytes: int = attrs.field(default=64 << 20, validator=_at_least_one)
    #: Largest output message of a Tail stream; adjacent chunks are merged up to it.
    tail_message_bytes: int = attrs.field(default=1 << 20, validator=_at_least_one)
    #: Seconds between keepalive pings and how long to wait for the answer: a follower whose
    #: host vanished (no FIN, no RST) is dropped after about their sum. The answer can queue
    #: behind megabytes of output on a busy stream, so the timeout is generous (under heavy
    #: load a 5 s one dropped live followers).
    keepalive_time: float = attrs.field(default=5.0, validator=_positive)
    keepalive_timeout: float = attrs.field(default=20.0, validator=_positive)
