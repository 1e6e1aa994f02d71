"""Server-Sent Events: the wire format, and when a client asked for it.

An event is ``event:``, ``id:`` and ``data:`` lines and a blank line. The data is always
one line of JSON (a proto message in its JSON mapping), so it never needs splitting; the
id of an output event is the position right after its bytes (see
:func:`~.params.format_position`), which a browser's ``EventSource`` sends back as
``Last-Event-ID`` when it reconnects: the stream resumes exactly there, nothing repeated,
nothing lost.
"""

from __future__ import annotations

from aiohttp import web

EVENT_STREAM = "text/event-stream"
NDJSON = "application/x-ndjson"

#: Milliseconds a browser waits before reconnecting a broken stream.
RETRY_MS = 2000

#: A comment line: keeps a quiet stream open and finds a vanished client at the next write.
HEARTBEAT = b": keep-alive\n\n"


def wants_event_stream(request: web.BaseRequest) -> bool:
    """Whether the client asked for SSE (``Accept: text/event-stream``)."""
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip() == EVENT_STREAM for part in accept.split(","))


def event(kind: str, data: str, event_id: str | None = None) -> bytes:
    """One event. ``data`` must hold no newline (one JSON line); ids no newline either."""
    if "\n" in data or "\r" in data or (event_id and ("\n" in event_id or "\r" in event_id)):
        raise ValueError("an SSE field cannot hold a line break")
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


def preamble() -> bytes:
    """What a stream starts with: the reconnection delay."""
    return f"retry: {RETRY_MS}\n\n".encode()
