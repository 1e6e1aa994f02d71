"""The mTLS gRPC server: a ``grpc.aio`` server on its own event-loop thread.

asyncio rather than a thread pool, so thousands of idle followers cost a coroutine each, not
a thread each. The loop runs on a thread this class owns, so the same object serves
``worker serve`` (whose main thread waits for signals) and in-process tests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from worker_core.plugin import ConfigError

from . import worker_pb2_grpc as pb_grpc
from .batching import encode_output_chunk
from .config import GrpcConfig
from .guard import Guard
from .servicer import WorkerServicer
from .tls import TlsFiles, TlsMaterial, load_material, server_credentials

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from worker_core.plugin import Engine

log = logging.getLogger("worker.grpc")

#: Bound on waiting for the loop thread to start the server or finish stopping it.
_START_TIMEOUT = 15.0


def server_options(config: GrpcConfig) -> list[tuple[str, Any]]:
    """Channel arguments: size caps and keepalive, so a vanished peer is noticed in seconds."""
    return [
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", config.max_response_bytes),
        # The server pings an idle connection every keepalive_time and drops it when no
        # answer comes within keepalive_timeout: a follower whose host died goes away.
        ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        # Recent gRPC cores time a keepalive ping out by this (default: one minute), not by
        # keepalive_timeout alone; measured: without it a black-holed peer stays for minutes.
        ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients may ping as often as every 5 s without being sent GOAWAY for it.
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0),
        # Calls that arrived but the loop has not picked up yet: past this gRPC cancels them
        # (default 1000). Measured: 1200 followers attaching at once lost a few to it.
        ("grpc.server.max_pending_requests", 20_000),
        ("grpc.server.max_pending_requests_hard_limit", 30_000),
        # A pending unauthenticated handshake may not hold a connection open for long.
        ("grpc.server_handshake_timeout_ms", 10_000),
    ]


class _Registration:
    """Stands in for the server while the generated code registers the service's handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers arrive through add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_worker_service(servicer: WorkerServicer, server: aio.Server) -> None:
    """Register ``worker.v1.Worker`` as the generated code would, except that Tail's messages
    are written by :func:`~.batching.encode_output_chunk` (no copy of the data into a
    protobuf message first)."""
    registration = _Registration()
    pb_grpc.add_WorkerServicer_to_server(servicer, registration)
    handlers = registration.handlers
    handlers["Tail"] = handlers["Tail"]._replace(response_serializer=encode_output_chunk)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(registration.service, handlers),)
    )
    server.add_registered_method_handlers(registration.service, handlers)


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:50051`` for IPv6) into its parts; ConfigError if malformed."""
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"listen address {address!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    return host, int(port_text)


class GrpcServer:
    """Serves ``engine`` over mTLS. ``start`` returns the bound port; ``stop`` closes it all."""

    def __init__(self, engine: Engine, config: GrpcConfig | None = None) -> None:
        self._engine = engine
        self._config = config or GrpcConfig()
        self.guard = Guard(self._config.max_streams_per_client)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: aio.Server | None = None
        self.port: int | None = None

    def start(self, host: str, port: int, tls: TlsFiles) -> int:
        """Listen on ``host:port`` (0: any free port) with ``tls``; return the bound port.

        Raises :class:`ConfigError` for unreadable or mismatched TLS files or an address
        that cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        material = load_material(tls)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="worker-grpc", daemon=True
        )
        self._thread.start()
        try:
            self.port = self._call(self._start(host, port, material), _START_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise
        log.info("serving on %s:%d", host, self.port)
        return self.port

    async def _start(self, host: str, port: int, material: TlsMaterial) -> int:
        server = aio.server(interceptors=[self.guard], options=server_options(self._config))
        add_worker_service(WorkerServicer(self._engine, self._config.tail_message_bytes), server)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_secure_port(target, server_credentials(material))
        except RuntimeError as exc:  # grpcio raises on a failed bind
            raise ConfigError(f"cannot listen on {target}: {exc}") from None
        if not bound:
            raise ConfigError(f"cannot listen on {target} (address in use or not local?)")
        await server.start()
        self._server = server
        return int(bound)

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting calls, give running calls ``grace`` seconds, then cancel them."""
        if self._loop is None:
            return
        if self._server is not None:
            server, self._server = self._server, None
            try:
                self._call(server.stop(grace), (grace or 0) + _START_TIMEOUT)
            except FutureTimeout:
                log.warning("the gRPC server did not stop in time")
        self._stop_loop()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> GrpcServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
