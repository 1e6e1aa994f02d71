"""The HTTP endpoint: Prometheus text at ``/metrics``, on a thread of its own.

``prometheus_client``'s own server (a threading WSGI server, one short thread per scrape),
bound to the configured address. It serves the same text at any path but ``/favicon.ico``;
``/metrics`` is the one documented. A bind failure becomes one line naming the address and
the kernel's reason, before any job could run.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from typing import TYPE_CHECKING

from prometheus_client import start_http_server

from worker_core.plugin import PluginError

from .config import format_address

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

#: Bound on waiting for the serving thread once told to stop (it polls every 0.5 s).
STOP_TIMEOUT = 5.0


def _why(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this host"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it and frees the port."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        #: The address bound, ``host:port`` (the real port when 0 was asked for).
        self.address = format_address(str(host), int(port))
        #: Whether only this host can reach it.
        self.loopback = _is_loopback(str(host))

    @classmethod
    def start(cls, host: str, port: int, registry: CollectorRegistry) -> MetricsServer:
        """Listen on ``host:port`` and serve ``registry``; :class:`PluginError` naming the
        address and the reason if it cannot (``address already in use``)."""
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            where = format_address(host, port)
            raise PluginError(f"metrics: cannot listen on {where}: {_why(exc)}") from None
        thread.name = "worker-metrics-http"
        return cls(httpd, thread)

    def close(self) -> None:
        """Stop serving and close the listening socket (bounded: :data:`STOP_TIMEOUT`)."""
        # shutdown() waits for serve_forever to notice; from a thread of its own so a
        # wedged server cannot hold the engine's close past the bound.
        stopper = threading.Thread(target=self._httpd.shutdown, name="worker-metrics-stop")
        stopper.start()
        stopper.join(STOP_TIMEOUT)
        self._httpd.server_close()
        self._thread.join(STOP_TIMEOUT)
