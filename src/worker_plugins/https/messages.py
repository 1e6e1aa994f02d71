"""Request and response bodies: the proto's JSON mapping (protobuf's ``json_format``).

Both transports speak the same messages (``worker.v1`` in ``proto/worker/v1/worker.proto``):
a POST body is the JSON of the RPC's request message, a response the JSON of its response
message. Field names are written in lowerCamelCase (the canonical mapping; the parser takes
the proto's snake_case names too), enums by name (``"JOB_STATE_RUNNING"``), 64-bit integers
as strings, bytes in base64; every field without presence is written even at its default,
so a client never has to guess at a missing ``labels`` or ``args``.

The mapping is json_format's; :mod:`.fast_json` computes the same result with the per-type
work done once (a submit's request and record are most of what json_format costs per call),
and hands anything it does not cover back to json_format. An answer that carries one job is
written from the record itself (:mod:`.job_json`), without building its ``pb.Job`` first.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from worker_core.plugin import Job

from .call_log import JOB_KEY
from .errors import ApiError
from .fast_json import Unsupported, dict_to_message, message_to_dict
from .job_json import job_to_dict

M = TypeVar("M", bound=Message)

JSON_TYPE = "application/json"


#: One encoder for every body (``json.dumps`` with options builds a new one per call). The
#: dicts come from the mapping, which never makes a cycle, so none is looked for.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as the proto's JSON mapping, as a dict."""
    try:
        return message_to_dict(message)
    except Unsupported:
        pass
    result: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True
    )
    return result


def to_json(message: Message) -> str:
    """``message`` as one line of JSON (no newline inside: it fits an SSE ``data:`` line)."""
    return _ENCODER.encode(to_dict(message))


def job_json(job: Job) -> str:
    """``job`` as one line of JSON (a ``Job``: it fits an SSE ``data:`` line)."""
    return _ENCODER.encode(job_to_dict(job))


def respond(message: Message, status: int = 200, **headers: str) -> web.Response:
    """``message`` as the JSON answer."""
    return web.Response(
        status=status, text=to_json(message), content_type=JSON_TYPE, headers=headers
    )


def respond_job(
    job: Job, status: int = 200, usage: dict[str, Any] | None = None, **headers: str
) -> web.Response:
    """The answer that carries one job (a ``SubmitResponse``, ``GetResponse``, ``StopResponse``
    and the like: each is ``{"job": ...}``), written from the record (:mod:`.job_json`); the
    job is noted for the call log."""
    body = _ENCODER.encode({"job": job_to_dict(job, usage)})
    response = web.Response(status=status, text=body, content_type=JSON_TYPE, headers=headers)
    response[JOB_KEY] = job.id
    return response


def parse(body: bytes, cls: type[M]) -> M:
    """A request message from a JSON body (empty means ``{}``); 400 naming the problem."""
    if not body.strip():
        return cls()
    try:
        data = json.loads(body)
    except ValueError as exc:  # not UTF-8, not JSON, or a number of more than 4300 digits
        raise ApiError("INVALID_ARGUMENT", f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ApiError("INVALID_ARGUMENT", "the body is not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError("INVALID_ARGUMENT", f"the body must be a JSON object ({cls.__name__})")
    try:
        return dict_to_message(data, cls)
    except Unsupported:
        pass  # json_format reads it, or says what is wrong with it
    try:
        return json_format.ParseDict(data, cls())
    except json_format.ParseError as exc:
        raise ApiError("INVALID_ARGUMENT", f"not a valid {cls.__name__}: {exc}") from None
    # Odd values deep inside; OverflowError: an integer too large for a double field.
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ApiError("INVALID_ARGUMENT", f"not a valid {cls.__name__}: {exc}") from None
