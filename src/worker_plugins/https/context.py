"""What every handler reads: the engine, the settings, the caller, and the request body.

The server's state hangs on the application (:data:`SERVER`); the caller's principal on
the request, put there by the guard (:mod:`.guard`) before any handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import attrs
from aiohttp import web
from google.protobuf.message import Message

from worker_core.plugin import Principal

from .config import HttpsConfig
from .errors import ApiError
from .messages import parse

if TYPE_CHECKING:
    from worker_core.plugin import Engine

M = TypeVar("M", bound=Message)


class StreamSlots:
    """Open streaming responses per client CN, capped. Touched only from the event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def open_streams(self, name: str) -> int:
        """How many streams ``name`` holds open now (for tests and diagnostics)."""
        return self._open[name]

    @contextlib.contextmanager
    def hold(self, principal: Principal) -> Iterator[None]:
        """One slot for the duration of a stream; 429 when the client holds them all."""
        name = principal.name
        if self._open[name] >= self.limit:
            raise ApiError(
                "RESOURCE_EXHAUSTED",
                f"{name!r} already holds {self.limit} open streams (the limit)",
            )
        self._open[name] += 1
        try:
            yield
        finally:
            self._open[name] -= 1
            if self._open[name] <= 0:
                del self._open[name]


@attrs.define
class ServerState:
    """The transport's state, shared by every request."""

    engine: Engine
    config: HttpsConfig
    slots: StreamSlots
    #: The API's operations by (method, route path): ``("POST", "/v1/jobs") -> "Submit"``.
    operations: dict[tuple[str, str], str] = attrs.Factory(dict)


SERVER = web.AppKey("worker_https_server", ServerState)

#: The request's key for the verified caller.
PRINCIPAL = "worker.principal"


def server(request: web.Request) -> ServerState:
    return request.app[SERVER]


def caller(request: web.Request) -> Principal:
    """The verified caller. Fails closed for a request that did not pass the guard."""
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise RuntimeError("no principal: the handler is not running behind the guard")
    return principal


async def read_body(request: web.Request) -> bytes:
    """The request body: at most ``max_body_bytes`` (413 beyond, refused before it is read
    when Content-Length says so), within ``body_timeout`` seconds (408 beyond)."""
    config = server(request).config
    length = request.content_length
    if length is not None and length > config.max_body_bytes:
        raise too_large(config)
    try:
        if request.content.is_eof():
            # The whole body came with the headers (a small JSON body, as a rule): there is
            # nothing left to wait for, so no timer to arm and cancel.
            return await request.read()
        async with asyncio.timeout(config.body_timeout):
            return await request.read()
    except TimeoutError:
        raise ApiError(
            "DEADLINE_EXCEEDED", f"the request body took longer than {config.body_timeout:g} s"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise too_large(config) from None


def too_large(config: HttpsConfig) -> ApiError:
    return ApiError(
        "RESOURCE_EXHAUSTED",
        f"the request body is larger than {config.max_body_bytes} bytes (max_body_bytes)",
        status=413,
    )


async def read_message(request: web.Request, cls: type[M]) -> M:
    """The request message a JSON body holds."""
    return parse(await read_body(request), cls)
