"""The HTTPS server: an aiohttp application on ``worker serve``'s event loop.

aiohttp because it runs on the asyncio loop ``grpc.aio`` already uses (both transports in
one loop, one thread), streams a response in pieces with back-pressure
(``StreamResponse.write`` waits for the socket to drain), takes Python's ``ssl`` context (so
TLS 1.3 can be the minimum) and caps request lines, headers and bodies itself. The socket is
bound here and handed to ``loop.create_server`` with the TLS context, so a handshake has a
deadline of its own and a failed bind says why.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

from worker_core.plugin import ConfigError
from worker_plugins.grpc_transport.address import bind_failure, format_address, parse_listen

from .app import make_app
from .config import HttpsConfig

if TYPE_CHECKING:
    from worker_core.plugin import Engine

log = logging.getLogger("worker.https")

#: Connections the kernel queues before the server accepts them.
BACKLOG = 1024


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port); ConfigError saying why not."""
    target = format_address(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"https: cannot listen on {target}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A port whose old connections linger in TIME_WAIT can be bound again at once; no
        # SO_REUSEPORT: a server owns its port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise ConfigError(f"https: cannot listen on {target}: {bind_failure(host, port)}") from None
    return sock


class HttpsListener:
    """The HTTPS transport on the running event loop: what ``serve_transports`` returns."""

    #: The transport's name in messages and in ``worker serve``'s start-up summary.
    name = "https"

    def __init__(self, config: HttpsConfig, context: ssl.SSLContext) -> None:
        self._config = config
        self._context = context
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.app: web.Application | None = None
        #: The port bound by :meth:`start` (the configured one, or the one picked for 0).
        self.port: int | None = None

    async def start(self, engine: Engine) -> list[str]:
        """Listen on ``[plugins.https] listen`` and serve ``engine``; the address bound."""
        if self._runner is not None:
            raise RuntimeError("the HTTPS transport is already started")
        config = self._config
        host, port = parse_listen(config.listen)
        sock = bind(host, port)
        self.app = make_app(engine, config)
        runner = web.AppRunner(
            self.app,
            handle_signals=False,  # serve owns SIGTERM and SIGINT
            access_log=None,
            # A client that goes away cancels its handler: its follower and slot are freed.
            handler_cancellation=True,
            # Also bounds a connection whose request never completes (slow headers).
            keepalive_timeout=config.idle_timeout,
            max_line_size=config.max_header_bytes,
            max_field_size=config.max_header_bytes,
            max_headers=config.max_headers,
        )
        try:
            await runner.setup()
            assert runner.server is not None
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                runner.server,
                sock=sock,
                ssl=self._context,
                ssl_handshake_timeout=config.handshake_timeout,
                backlog=BACKLOG,
            )
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sock.getsockname()[1])
        address = format_address(host, self.port)
        log.info("serving on %s", address)
        return [address]

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, give open requests ``grace`` seconds, then cancel them."""
        server, self._server = self._server, None
        runner, self._runner = self._runner, None
        if server is not None:
            server.close()
        if runner is None:
            return
        if runner.server is not None:
            runner.server.pre_shutdown()
            await runner.server.shutdown(grace)
        await runner.cleanup()
