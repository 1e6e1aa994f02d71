"""Request and response bodies: the proto's JSON mapping (protobuf's ``json_format``).

Both transports speak the same messages (``worker.v1`` in ``proto/worker/v1/worker.proto``):
a POST body is the JSON of the RPC's request message, a response the JSON of its response
message. Field names are written in lowerCamelCase (the canonical mapping; the parser takes
the proto's snake_case names too), enums by name (``"JOB_STATE_RUNNING"``), 64-bit integers
as strings, bytes in base64; every field without presence is written even at its default,
so a client never has to guess at a missing ``labels`` or ``args``.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from .errors import ApiError

M = TypeVar("M", bound=Message)

JSON_TYPE = "application/json"


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as the proto's JSON mapping, as a dict."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True
    )
    return result


def to_json(message: Message) -> str:
    """``message`` as one line of JSON (no newline inside: it fits an SSE ``data:`` line)."""
    return json.dumps(to_dict(message), separators=(",", ":"), ensure_ascii=False)


def respond(message: Message, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=to_json(message), content_type=JSON_TYPE, headers=headers
    )


def parse(body: bytes, cls: type[M]) -> M:
    """A request message from a JSON body (empty means ``{}``); 400 naming the problem."""
    if not body.strip():
        return cls()
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError("INVALID_ARGUMENT", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError("INVALID_ARGUMENT", f"the body must be a JSON object ({cls.__name__})")
    try:
        return json_format.ParseDict(data, cls())
    except json_format.ParseError as exc:
        raise ApiError("INVALID_ARGUMENT", f"not a valid {cls.__name__}: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # odd values deep inside
        raise ApiError("INVALID_ARGUMENT", f"not a valid {cls.__name__}: {exc}") from None
