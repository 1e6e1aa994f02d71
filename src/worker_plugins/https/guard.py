"""The one wrapper around every request: identity, CSRF, error mapping and response headers.

It is an aiohttp middleware, so it wraps every route the application has, including one
added later whose author forgot about authentication: no handler runs without a verified
principal. Then:

- **Cross-site requests.** A browser presents its client certificate to any page that asks,
  so every state-changing request (POST, PUT, PATCH, DELETE) must prove it came from the
  console or from a program, not from another site: ``Content-Type: application/json``
  (which an HTML form cannot send, and a cross-site script cannot send without a CORS
  preflight this server never approves) AND either an ``Origin`` naming this server or the
  ``X-Worker-Client`` header (a custom header: the same holds). An ``Origin`` naming another
  site is refused whatever else the request carries; so is any request to ``/v1/`` that a
  browser marks ``Sec-Fetch-Site: cross-site`` or ``same-site``.
- **Errors.** Domain errors go through the engine's one table (:mod:`.errors`); anything
  else is logged and answered 500 with a generic message.
- **Metrics and the call log.** Each API call is counted by the ``metrics`` plugin, when it
  runs, as ``worker_rpc_duration_seconds{method, code}`` with the operation's RPC name and
  the error code (``OK``, ``NOT_FOUND`` ...), as for gRPC, and written as one
  ``worker.calls`` line (:mod:`.call_log`).
- **Headers.** A strict Content-Security-Policy (scripts, styles and connections from this
  origin only, no inline script, no framing, no form submission) and the usual companions
  on every response, streams included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from worker_core.plugin import PermissionDenied
from worker_plugins.certs.client_identity import Unauthenticated
from worker_plugins.denials import log_denial, loggable
from worker_plugins.metrics.rpc import record_rpc

from . import call_log
from .context import PRINCIPAL, server, too_large
from .errors import CODE_KEY, INTERNAL_MESSAGE, ApiError, domain_error, http_error, json_error
from .identity import connection_principal

log = logging.getLogger("worker.https")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Methods that change state and so need the cross-site proof.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: The custom header a non-browser client (or the console) sends instead of an Origin.
CLIENT_HEADER = "X-Worker-Client"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def own_origin(request: web.BaseRequest) -> str:
    """This server's origin as the client addressed it (``https://host:port``)."""
    return f"https://{request.host}".lower()


def check_cross_site(request: web.BaseRequest) -> None:
    """Refuse what a browser says another site sent, and unproven state changes."""
    site = request.headers.get("Sec-Fetch-Site")
    if request.path.startswith("/v1/") and site in ("cross-site", "same-site"):
        raise ApiError("PERMISSION_DENIED", f"a {site} request to the API is refused")
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != own_origin(request):
        raise ApiError(
            "PERMISSION_DENIED",
            f"cross-origin request refused: Origin {origin!r} is not {own_origin(request)}",
        )
    if request.content_type != "application/json":
        raise ApiError(
            "INVALID_ARGUMENT",
            f"a {request.method} request must send Content-Type: application/json",
            status=415,
        )
    if origin is None and CLIENT_HEADER not in request.headers:
        raise ApiError(
            "PERMISSION_DENIED",
            f"a {request.method} request must send an Origin header naming this server or "
            f"an {CLIENT_HEADER} header (cross-site request protection)",
        )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    code = "CANCELLED"  # the client went away before the answer
    response: web.StreamResponse | None = None
    try:
        response = await _answer(request, handler)
        code = response.get(CODE_KEY, "OK" if response.status < 400 else "INTERNAL")
        return response
    finally:
        operation = _operation(request)
        if operation is not None:
            seconds = time.monotonic() - started
            record_rpc(operation, code, seconds)
            if call_log.enabled():
                _log_call(request, response, operation, code, seconds)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        request[PRINCIPAL] = connection_principal(request.transport)
    except Unauthenticated as exc:
        log.info("refused a request from %s: %s", request.remote, exc)
        return json_error(401, "UNAUTHENTICATED", str(exc))
    try:
        check_cross_site(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, PermissionDenied):
            _log_denial(request, exc)
        response = domain_error(exc)
        if response is None:
            log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
            return json_error(500, "INTERNAL", INTERNAL_MESSAGE)
        return response


def _operation(request: web.Request) -> str | None:
    """The API operation a request was routed to (``"Submit"``), None for anything else:
    metric labels come from the route table, never from the client's path."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return server(request).operations.get((request.method, resource.canonical))


def _log_denial(request: web.Request, exc: PermissionDenied) -> None:
    """The ``worker.authz`` line, as gRPC writes it (with ``transport=https``)."""
    log_denial(
        _caller_name(request),
        _operation(request) or f"{request.method} {request.path}",
        _named_job(request),
        exc,
        transport="https",
    )


def _caller_name(request: web.Request) -> str | None:
    principal = request.get(PRINCIPAL)
    return principal.name if principal is not None else None


def _named_job(request: web.Request) -> str | None:
    """The id or prefix the path named, escaped for a log line."""
    named = request.match_info.get("job_id")
    return loggable(named) if named else None


def _log_call(
    request: web.Request,
    response: web.StreamResponse | None,
    operation: str,
    code: str,
    seconds: float,
) -> None:
    # The full id an answer or a stream noted, else the id or prefix the path named.
    job = response.get(call_log.JOB_KEY) if response is not None else None
    job = job or request.get(call_log.JOB_KEY) or _named_job(request)
    resource = request.match_info.route.resource
    call_log.log_call(
        operation,
        _caller_name(request),
        job,
        code,
        seconds,
        f"{request.method} {resource.canonical if resource is not None else request.path}",
        response.status if response is not None else None,
    )


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` (curl sends it for large bodies): a body over the cap is
    refused before the client sends it; otherwise the client is told to go on."""
    config = server(request).config
    length = request.content_length
    if length is not None and length > config.max_body_bytes:
        error = too_large(config)
        return json_error(error.status, error.code, error.message)
    expect = request.headers.get("Expect", "")
    if request.version >= (1, 1):
        if expect.lower() != "100-continue":
            return json_error(417, "INVALID_ARGUMENT", f"unknown Expect: {expect}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim line is not the response
    return None


async def security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers on every response, streams included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "worker"
