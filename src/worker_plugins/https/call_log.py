"""One ``worker.calls`` line per API call, as the gRPC transport writes one per RPC.

INFO, when the call ends (shown with ``worker -v``), in the gRPC transport's format, then
what only HTTP has (one line, here on two)::

    Submit principal=alice job=84af... code=OK duration_ms=3.1
        transport=https route="POST /v1/jobs" status=201

- the operation's RPC name (``Submit``, ``Get``, ``Tail``: the names gRPC's lines and the
  metrics use; from the route table, never from the client's path), the caller's Common
  Name (``-`` when it has none: 401), the job (the full id when the answer or the stream
  names it, else the id or prefix in the path, escaped and cut short), the code's name
  (``OK``, ``NOT_FOUND``, ``CANCELLED`` for a client that went away) and the duration in
  milliseconds (a stream's whole life);
- ``transport=https``, the route (method and path template) and the HTTP status (``-`` when
  no answer was given).

In JSON lines the fields are ``principal``, ``method``, ``job``, ``code``, ``duration_ms``
(the gRPC lines' five), ``transport``, ``route`` and ``status``. Only the API's routes are
calls: the console's pages and static files have no line.
"""

from __future__ import annotations

import logging

from worker_plugins.denials import loggable

calls_log = logging.getLogger("worker.calls")

#: Where an answer (on the response) or a stream (on the request) notes the job's full id.
JOB_KEY = "worker.job"


def enabled() -> bool:
    """Whether call lines are written (``-v``): otherwise nothing is gathered for them."""
    return calls_log.isEnabledFor(logging.INFO)


def log_call(
    method: str,
    principal: str | None,
    job: str | None,
    code: str,
    seconds: float,
    route: str,
    status: int | None,
) -> None:
    """Write the line of one call that ended with ``code`` after ``seconds``."""
    duration_ms = round(seconds * 1000, 1)
    on_job = f" job={job}" if job else ""
    calls_log.info(
        '%s principal=%s%s code=%s duration_ms=%.1f transport=https route="%s" status=%s',
        method,
        loggable(principal or "-"),
        on_job,
        code,
        duration_ms,
        route,
        "-" if status is None else status,
        extra={
            "principal": principal,
            "method": method,
            "job": job,
            "code": code,
            "duration_ms": duration_ms,
            "transport": "https",
            "route": route,
            "status": status,
        },
    )
