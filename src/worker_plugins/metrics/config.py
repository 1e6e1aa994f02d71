"""The plugin's settings, ``[plugins.metrics]``, and the one thing in them to parse: ``listen``."""

from __future__ import annotations

from typing import Any

import attrs

#: Where ``/metrics`` is served unless configured: loopback only (9464 is the port
#: OpenTelemetry's Prometheus exporter uses, so a scrape config may already expect it).
DEFAULT_LISTEN = "127.0.0.1:9464"


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) into its parts; ValueError if malformed."""
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"must be HOST:PORT (e.g. {DEFAULT_LISTEN}), got {address!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:9464``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name} {exc}") from None


@attrs.frozen
class MetricsConfig:
    """``[plugins.metrics]``::

    listen = "127.0.0.1:9464"
    """

    #: host:port of the plain-HTTP endpoint serving Prometheus text at /metrics ("[::1]:9464"
    #: for IPv6; port 0 picks a free one). It has no TLS and no authentication: anyone who
    #: can reach it reads job counts and RPC rates, so keep it on loopback (the default) or
    #: behind a firewall; any other address is accepted, with a warning at startup.
    listen: str = attrs.field(default=DEFAULT_LISTEN, validator=_listen)
