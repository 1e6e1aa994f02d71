"""The mTLS gRPC server: a ``grpc.aio`` server on an asyncio event loop.

asyncio rather than a thread pool, so thousands of idle followers cost a coroutine each, not
a thread each. :class:`GrpcListener` runs on the caller's loop (``worker serve`` shares one
loop among its transports); :class:`GrpcServer` gives it a loop thread of its own.

:meth:`GrpcListener.reload` (``worker serve`` calls it on SIGHUP) reads the TLS files again;
new connections get the new certificate, key and CA, open ones and their calls go on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import attrs
import grpc
from grpc import aio

from worker_core.plugin import ConfigError
from worker_plugins.certs.expiry import now_utc

from . import worker_pb2_grpc as pb_grpc
from .address import bind_failure, format_address, parse_listen
from .batching import encode_output_chunk
from .config import GrpcConfig
from .core_log import quiet_client_departures
from .guard import Guard
from .servicer import WorkerServicer
from .tls import (
    TlsFiles,
    TlsMaterial,
    certificate_configuration,
    check_current,
    load_material,
    server_credentials,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from cryptography import x509

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
        # gRPC sets SO_REUSEPORT by default, so a second server on the same port would start
        # and share the clients at random with the first. A server owns its port.
        ("grpc.so_reuseport", 0),
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


class GrpcListener:
    """The gRPC transport on the running event loop: what ``serve_transports`` returns.

    ``worker serve`` awaits :meth:`start` and :meth:`stop` on its one event loop, beside any
    other transport; :class:`GrpcServer` runs the same object on a thread of its own.
    """

    #: The transport's name in messages and in ``worker serve``'s start-up summary.
    name = "grpc"

    def __init__(self, config: GrpcConfig, tls: TlsMaterial) -> None:
        self._config = config
        self._tls = tls
        self.guard = Guard(config.max_streams_per_client)
        self._server: aio.Server | None = None
        #: The port bound by :meth:`start` (the configured one, or the one picked for 0).
        self.port: int | None = None
        # A reloaded configuration gRPC has not picked up yet: set by reload (a worker
        # thread), taken by _fetch_configuration (gRPC's, before a handshake).
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._pending_lock = threading.Lock()

    async def start(self, engine: Engine) -> list[str]:
        """Listen on ``[plugins.grpc] listen`` and serve ``engine``; the address bound.

        Raises :class:`ConfigError` naming the address and why it cannot be bound (in use,
        not local, privileged).
        """
        if self._server is not None:
            raise RuntimeError("the gRPC transport is already started")
        host, port = parse_listen(self._config.listen)
        quiet_client_departures()
        server = aio.server(interceptors=[self.guard], options=server_options(self._config))
        add_worker_service(WorkerServicer(engine, self._config.tail_message_bytes), server)
        target = format_address(host, port)
        try:
            credentials = server_credentials(self._tls, self._fetch_configuration)
            bound = server.add_secure_port(target, credentials)
        except RuntimeError:  # grpcio raises on a failed bind (older versions return 0)
            bound = 0
        if not bound:
            await server.stop(None)
            raise ConfigError(f"cannot listen on {target}: {bind_failure(host, port)}")
        await server.start()
        self._server, self.port = server, int(bound)
        log.info("serving on %s", format_address(host, self.port))
        return [format_address(host, self.port)]

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting calls, give running calls ``grace`` seconds, then cancel them."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    # --- reloading the TLS files ---------------------------------------------------------------

    def reload(self) -> str:
        """Read the CA, certificate and key files again; new connections get them.

        Blocking (file reads): call it off the event loop. Raises :class:`ConfigError` for
        files that do not load, a key that does not match the certificate, or a certificate
        not valid now; the files in force then stay in force. Returns what is now served.
        """
        files = self._tls.files
        if files is None:
            raise ConfigError("the TLS material was not read from files: nothing to reload")
        material = load_material(files)
        check_current(material, now_utc())
        configuration = certificate_configuration(material)
        with self._pending_lock:
            self._pending = configuration
            self._tls = material
        return material.describe()

    def _fetch_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        # gRPC calls this before every new connection's handshake: a new configuration once
        # after a reload, None (keep the current one) otherwise.
        with self._pending_lock:
            configuration, self._pending = self._pending, None
        return configuration

    def certificates(self) -> Sequence[tuple[str, x509.Certificate]]:
        """The certificates served and trusted now, named, for ``worker serve``'s expiry
        warnings."""
        return self._tls.certificates()


class GrpcServer:
    """A :class:`GrpcListener` on an event-loop thread of its own, for a caller whose thread
    is not an event loop (an in-process server in tests, a program embedding the engine).

    ``start`` returns the bound port; ``stop`` closes it all.
    """

    def __init__(self, engine: Engine, config: GrpcConfig | None = None) -> None:
        self._engine = engine
        self._config = config or GrpcConfig()
        self._listener: GrpcListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def guard(self) -> Guard:
        """The started listener's guard (open streams per client, for tests and diagnostics)."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return self._listener.guard

    def start(self, host: str, port: int, tls: TlsFiles) -> int:
        """Listen on ``host:port`` (0: any free port) with ``tls``; return the bound port.

        Raises :class:`ConfigError` for unreadable or mismatched TLS files or an address
        that cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        config = attrs.evolve(self._config, listen=format_address(host, port))
        self._listener = GrpcListener(config, load_material(tls))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="worker-grpc", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._listener.start(self._engine), _START_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise
        assert self._listener.port is not None
        self.port = self._listener.port
        return self.port

    def reload(self) -> str:
        """:meth:`GrpcListener.reload` of the started server."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return self._listener.reload()

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting calls, give running calls ``grace`` seconds, then cancel them."""
        if self._loop is None:
            return
        if self._listener is not None:
            try:
                self._call(self._listener.stop(grace), (grace or 0) + _START_TIMEOUT)
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
