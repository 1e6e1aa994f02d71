"""The one wrapper around every RPC: identity, the per-client stream cap, error mapping, and
the record of each call (a log line, a latency sample, each denial: see :mod:`.call_log`).

It is a server interceptor, so it wraps every method the server registers, including one
added to the proto later whose author forgot about authentication: a handler never runs
without a verified principal. Handlers read that principal with :func:`current_principal`;
authorization itself is the engine's (``authorize`` hooks), given the principal on every call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from worker_core.plugin import InvalidSpec, Principal
from worker_plugins.certs.client_identity import Unauthenticated

from .auth import peer_principal
from .call_log import CallLog
from .errors import FIELD_METADATA_KEY, INTERNAL_MESSAGE, status_for

log = logging.getLogger("worker.grpc")

# Set by the guard for the task serving one RPC (grpc.aio runs each RPC in its own task, so
# the value never leaks to another call).
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("worker_grpc_principal")


def current_principal() -> Principal:
    """The verified caller of the RPC being served. Fails closed outside the guard."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("no principal: the handler is not running behind the guard") from None


class Undecodable:
    """Stands in for a request whose bytes are not a valid message (invalid UTF-8 in a string
    field, corrupt framing). gRPC decodes before any handler runs and would answer UNKNOWN with
    the Python exception; the guard answers INVALID_ARGUMENT instead."""

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return Undecodable(str(exc) or type(exc).__name__)

    return deserialize


async def _refuse_undecodable(request: Any, context: aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid message: {request.error}",
        )


class Guard(aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped here
    """Authenticates the caller, caps its concurrent streams and maps errors to statuses."""

    def __init__(self, max_streams_per_client: int) -> None:
        self._max_streams = max_streams_per_client
        # Open response streams per CN. Touched only from the server's event loop.
        self._streams: Counter[str] = Counter()
        # Wrapped handlers by method name. Touched only from the server's event loop.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def open_streams(self, name: str) -> int:
        """How many response streams ``name`` holds open now (for tests and diagnostics)."""
        return self._streams[name]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        wrapped = self._wrap(handler, method)
        # The wrapped handler depends only on the method: build it once, not per call.
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        wrap: dict[str, Any] = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), **wrap
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method), **wrap
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method), **wrap
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method), **wrap
        )

    # -----------------------------------------------------------------------------------------

    async def _authenticate(self, context: aio.ServicerContext, call: CallLog) -> Principal:
        try:
            principal = peer_principal(context.auth_context())
        except Unauthenticated as exc:
            log.info("refused a call from %s: %s", _peer(context), exc)
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        _principal.set(principal)
        call.principal = principal.name
        return principal

    async def _fail(
        self, context: aio.ServicerContext, exc: Exception, method: str, call: CallLog
    ) -> NoReturn:
        """Abort the call with the status for ``exc``."""
        call.failed(exc)
        mapped = status_for(exc)
        if mapped is None:
            log.error("unexpected error in %s from %s", method, _peer(context), exc_info=exc)
            await _abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        code, message = mapped
        metadata = ((FIELD_METADATA_KEY, exc.field),) if isinstance(exc, InvalidSpec) else ()
        await _abort(context, code, message, metadata)

    def _unary(
        self, behavior: Callable[..., Awaitable[Any]], method: str
    ) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: aio.ServicerContext) -> Any:
            call = CallLog(method)
            code = grpc.StatusCode.UNKNOWN
            try:
                await self._authenticate(context, call)
                call.request(request)
                await _refuse_undecodable(request, context)
                try:
                    response = await behavior(request, context)
                except aio.AbortError:
                    raise  # the handler chose its status already
                except Exception as exc:
                    await self._fail(context, exc, method, call)
                call.response(response)
                code = grpc.StatusCode.OK
                return response
            except aio.AbortError:
                code = _aborted_code(context)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client went away or gave up
                raise
            finally:
                call.finish(code)

        return guarded

    def _stream(
        self, behavior: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., Any]:
        async def guarded(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            call = CallLog(method)
            code = grpc.StatusCode.UNKNOWN
            try:
                principal = await self._authenticate(context, call)
                call.request(request)
                await _refuse_undecodable(request, context)
                name = principal.name
                if self._streams[name] >= self._max_streams:
                    await _abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{name!r} already holds {self._max_streams} open streams (the limit)",
                    )
                self._streams[name] += 1
                try:
                    first = True
                    async for response in behavior(request, context):
                        if first:  # Watch's first Job names the job in full
                            call.response(response)
                            first = False
                        yield response
                except aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(context, exc, method, call)
                finally:
                    self._streams[name] -= 1
                    if self._streams[name] <= 0:
                        del self._streams[name]
                code = grpc.StatusCode.OK
            except aio.AbortError:
                code = _aborted_code(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                # The client cancelled the stream or went away (a follower's Ctrl-C).
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                call.finish(code)

        return guarded


#: Status details and trailers echo client input (an id, a path): past a few KiB the client's
#: metadata limit would turn the status into RESOURCE_EXHAUSTED, so they are cut short.
MAX_MESSAGE_CHARS = 512
MAX_FIELD_CHARS = 256


def _shorten(text: str, limit: int, ellipsis: str = "…") -> str:
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis


def _metadata_value(text: str) -> str:
    # A metadata value must be printable ASCII; a field name may carry any key a client sent.
    printable = "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in text)
    return _shorten(printable, MAX_FIELD_CHARS, "...")


async def _abort(
    context: aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    metadata: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """``context.abort``, typed: it ends the call by raising ``AbortError``."""
    safe = tuple((key, _metadata_value(value)) for key, value in metadata)
    await context.abort(code, _shorten(message, MAX_MESSAGE_CHARS), trailing_metadata=safe)
    raise AssertionError("ServicerContext.abort returned")


def _aborted_code(context: aio.ServicerContext) -> grpc.StatusCode:
    """The status an aborted call ends with (the one given to ``abort``)."""
    try:
        code = context.code()
    except Exception:  # not every grpcio version keeps it readable
        return grpc.StatusCode.UNKNOWN
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _peer(context: aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # the connection may be gone already
        return "?"
