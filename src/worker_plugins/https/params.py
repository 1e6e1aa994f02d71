"""Query strings into the request messages and model values they stand for.

A GET has no body, so its fields come from the query string: ``GET /v1/jobs`` takes the
fields of ``ListRequest`` (``state``, ``owner``, ``name``, ``label``, the time bounds,
``page_size``, ``page_token``) and ``GET /v1/jobs/{id}/output`` those of ``TailRequest``
(``stream``, ``start``, ``follow``). A parameter this server does not know is refused: a
misspelt filter must not silently list every job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs
from multidict import MultiMapping

from worker_core.plugin import BOTH_STREAMS, InvalidSpec, StartAt, StartPosition, Stream
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.convert import MAX_INT_LIMIT

#: ``GET /v1/jobs`` parameters: name -> what it is, for the OpenAPI document and errors.
LIST_PARAMS: Mapping[str, str] = {
    "state": "only jobs in this state (repeat for several): queued, held, pending, running, "
    "paused, stopping, ended (or JOB_STATE_RUNNING ...)",
    "owner": "only this owner's jobs",
    "name": "only jobs with this name",
    "label": "only jobs with this label, as KEY=VALUE (repeat: all of them)",
    "created_after": "created after this time (seconds since the epoch)",
    "created_before": "created before this time (seconds since the epoch)",
    "ended_after": "ended after this time (seconds since the epoch)",
    "ended_before": "ended before this time (seconds since the epoch)",
    "page_size": "jobs per page (default 100, at most 1000)",
    "page_token": "next_page_token of the previous page",
}

#: ``GET /v1/jobs/{id}/output`` parameters.
OUTPUT_PARAMS: Mapping[str, str] = {
    "stream": "stdout, stderr or both (default both: in order of arrival)",
    "start": "beginning (default), end (live only), N (byte offset, one stream) or "
    "OUT,ERR (both streams); a Last-Event-ID header overrides it",
    "follow": "true: go on until the job has ended; false (default): what was written "
    "when the request arrived",
}

#: ``GET /v1/jobs/{id}/events`` has none.
EVENTS_PARAMS: Mapping[str, str] = {}

_TIME_PARAMS = ("created_after", "created_before", "ended_after", "ended_before")
_REPEATABLE = frozenset({"state", "label"})


def check_known(query: MultiMapping[str], known: Iterable[str]) -> None:
    """Refuse parameters outside ``known`` and repeats of single-valued ones."""
    allowed = set(known)
    for key in query:
        if key not in allowed:
            choices = ", ".join(sorted(allowed)) or "none"
            raise InvalidSpec(key, f"unknown query parameter (this route takes: {choices})")
        if key not in _REPEATABLE and len(query.getall(key)) > 1:
            raise InvalidSpec(key, "given more than once")


def _float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidSpec(name, f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidSpec(name, f"expected a finite number, got {text!r}")
    return value


def _uint(name: str, text: str, limit: int = MAX_INT_LIMIT) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InvalidSpec(name, f"expected a non-negative integer, got {text!r}")
    value = int(text)
    if value > limit:
        raise InvalidSpec(name, f"must be at most {limit}, got {value}")
    return value


def _state(text: str) -> pb.JobState.ValueType:
    name = text.strip().upper()
    if not name.startswith("JOB_STATE_"):
        name = "JOB_STATE_" + name
    if name == "JOB_STATE_UNSPECIFIED" or name not in pb.JobState.keys():  # noqa: SIM118
        raise InvalidSpec("state", f"unknown job state {text!r}")
    return pb.JobState.Value(name)


def list_request(query: MultiMapping[str]) -> pb.ListRequest:
    """The ``ListRequest`` a ``GET /v1/jobs`` query string stands for."""
    check_known(query, LIST_PARAMS)
    request = pb.ListRequest(
        states=[_state(text) for text in query.getall("state", [])],
        owner=query.get("owner", ""),
        name=query.get("name", ""),
        page_token=query.get("page_token", ""),
    )
    for text in query.getall("label", []):
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidSpec("label", f"expected KEY=VALUE, got {text!r}")
        request.labels[key] = value
    for name in _TIME_PARAMS:
        if name in query:
            setattr(request, name, _float(name, query[name]))
    if "page_size" in query:
        request.page_size = _uint("page_size", query["page_size"], (1 << 32) - 1)
    return request


def parse_bool(name: str, text: str | None) -> bool:
    if text is None:
        return False
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise InvalidSpec(name, f"expected true or false, got {text!r}")


def parse_streams(text: str | None) -> frozenset[Stream]:
    if text is None or text == "both":
        return BOTH_STREAMS
    for stream in Stream:
        if text == stream.value:
            return frozenset({stream})
    raise InvalidSpec("stream", f"expected stdout, stderr or both, got {text!r}")


#: The order of offsets in a two-stream position (``"OUT,ERR"``).
STREAM_ORDER = (Stream.STDOUT, Stream.STDERR)


def ordered(streams: frozenset[Stream]) -> tuple[Stream, ...]:
    return tuple(s for s in STREAM_ORDER if s in streams)


def parse_position(name: str, text: str, streams: frozenset[Stream]) -> StartPosition:
    """``beginning``, ``end``, or byte offsets: one per selected stream, comma-separated
    (stdout first): the form of an SSE event's id, so a Last-Event-ID resumes exactly."""
    if text == "beginning":
        return StartAt.BEGINNING
    if text == "end":
        return StartAt.END
    order = ordered(streams)
    parts = text.split(",")
    if len(parts) != len(order):
        shape = "N" if len(order) == 1 else "OUT,ERR"
        raise InvalidSpec(name, f"expected beginning, end or {shape} (byte offsets), got {text!r}")
    return {stream: _uint(name, part) for stream, part in zip(order, parts, strict=True)}


def format_position(offsets: Mapping[Stream, int], streams: frozenset[Stream]) -> str:
    """The offsets of the selected streams as :func:`parse_position` reads them."""
    return ",".join(str(offsets.get(stream, 0)) for stream in ordered(streams))


@attrs.frozen
class OutputQuery:
    """What ``GET /v1/jobs/{id}/output`` asks for."""

    streams: frozenset[Stream]
    start: StartPosition
    follow: bool


def output_query(query: MultiMapping[str], last_event_id: str | None) -> OutputQuery:
    check_known(query, OUTPUT_PARAMS)
    streams = parse_streams(query.get("stream"))
    if last_event_id is not None:
        start = parse_position("Last-Event-ID", last_event_id.strip(), streams)
    else:
        start = parse_position("start", query.get("start", "beginning"), streams)
    return OutputQuery(streams, start, parse_bool("follow", query.get("follow")))
