"""Errors as HTTP statuses with a JSON body ``{"code": ..., "message": ..., "field": ...}``.

The code is the transport-neutral name from the one table in the engine
(:func:`worker_core.plugin.error_code`), the same name a gRPC client reads as its status;
this module only chooses the HTTP status for each:

=====================  ======  ==========================================================
code                   status  why this status
=====================  ======  ==========================================================
INVALID_ARGUMENT       400     the request is malformed; ``field`` names the part
UNAUTHENTICATED        401     no usable client certificate (transport-level)
PERMISSION_DENIED      403     the caller may not do this to a job it may read
NOT_FOUND              404     no such job, or one the caller may not read (never 403)
FAILED_PRECONDITION    409     the job's state forbids it (stop before purge, resume a
                               running job): a conflict with the resource's current state
RESOURCE_EXHAUSTED     429     a capacity is used up (streams per client, a quota): retry
                               later; a body over the cap is 413 with this code
DEADLINE_EXCEEDED      408     the client took too long to send its request body
UNIMPLEMENTED          501     this server does not do that (405 for a method on a route)
INTERNAL               500     a bug on our side, logged; the message is generic
=====================  ======  ==========================================================
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from worker_core.plugin import InvalidSpec, error_code

#: HTTP status for each code of the engine's table (and the transport's own).
STATUS_BY_CODE: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 408,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
}

#: What a client reads for an error outside the table.
INTERNAL_MESSAGE = "internal server error (logged on the server)"

#: Messages echo client input (an id, a path): past this they are cut short.
MAX_MESSAGE_CHARS = 512
MAX_FIELD_CHARS = 256


class ApiError(Exception):
    """An error the transport itself answers: a code, a message, an optional field, and the
    HTTP status when it is not the code's usual one (413 for a body over the cap)."""

    def __init__(
        self, code: str, message: str, field: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status if status is not None else STATUS_BY_CODE[code]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of an error."""
    return {
        "code": code,
        "message": _shorten(message, MAX_MESSAGE_CHARS),
        "field": None if field is None else _shorten(field, MAX_FIELD_CHARS),
    }


#: Where an error response keeps its code (for the metrics of the call).
CODE_KEY = "worker.code"


def json_error(
    status: int, code: str, message: str, field: str | None = None, **headers: str
) -> web.Response:
    """An error response."""
    response = web.Response(
        status=status,
        text=json.dumps(error_body(code, message, field)),
        content_type="application/json",
        headers=headers,
    )
    response[CODE_KEY] = code
    return response


def domain_error(exc: BaseException) -> web.Response | None:
    """The response for a domain error from the engine; None if it is not one (a bug)."""
    if isinstance(exc, ApiError):
        return json_error(exc.status, exc.code, exc.message, exc.field)
    code = error_code(exc)
    if code is None:
        return None
    field = exc.field if isinstance(exc, InvalidSpec) else None
    return json_error(STATUS_BY_CODE[code], code, str(exc), field)


#: Codes for aiohttp's own refusals (routing, body size), by HTTP status.
CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    406: "INVALID_ARGUMENT",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
}


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's refusal (no such route, a method the route lacks) as a JSON error."""
    code = CODE_BY_HTTP_STATUS.get(
        exc.status, "INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL"
    )
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    message = exc.text or exc.reason
    if exc.status == 404:
        message = "no such route (the API is under /v1/, see /v1/openapi.json)"
    return json_error(exc.status, code, message, **headers)
