"""The ``worker.authz`` line of each refused action, the same from every transport.

WARNING, one per authorization denial (the engine refused the caller the action:
PERMISSION_DENIED), with the fields ``principal``, ``action``, ``method`` (the RPC name, which
the HTTPS API's routes carry too), ``job`` and ``reason``; over HTTPS also ``transport``. A
job the caller may not read is answered NOT_FOUND, so ids cannot be probed; that is the call
line's code, not a denial line (the engine cannot tell a transport which of "absent" and
"hidden" it was, and the log must not either, for the same reason).

Also the one escaping of client input for log lines (:func:`loggable`), which both
transports' call lines use.
"""

from __future__ import annotations

import logging

denials_log = logging.getLogger("worker.authz")

#: The action the engine authorizes for each method, for the denial line.
ACTIONS = {
    "Submit": "submit",
    "Release": "submit",  # one's own held job
    "Stop": "stop",
    "Signal": "stop",
    "Pause": "stop",
    "Resume": "stop",
    "Get": "read",
    "List": "read",
    "Tail": "read",
    "Watch": "read",
    "Purge": "purge",
    "PurgeOne": "purge",
}

#: Client input (a job id from a request) is cut to this many characters in a log line.
MAX_LOGGED_CHARS = 128


def loggable(text: str) -> str:
    """``text`` as one line of printable ASCII (others escaped), cut to a bounded length:
    a request field must not be able to write a line of its own into a text log."""
    if not (text.isascii() and text.isprintable()):
        text = ascii(text)[1:-1]
    if len(text) > MAX_LOGGED_CHARS:
        text = text[: MAX_LOGGED_CHARS - 3] + "..."
    return text


def log_denial(
    principal: str | None,
    method: str,
    job: str | None,
    reason: Exception,
    transport: str | None = None,
) -> None:
    """Write the line of one refused call: ``method`` (an RPC name) by ``principal``, on
    ``job`` if it named one (already :func:`loggable`), refused with ``reason``."""
    action = ACTIONS.get(method, method.lower())
    on_job = f" job={job}" if job else ""
    over = f" transport={transport}" if transport else ""
    extra = {
        "principal": principal,
        "action": action,
        "method": method,
        "job": job,
        "reason": str(reason),
    }
    if transport:
        extra["transport"] = transport
    denials_log.warning(
        "denied principal=%s action=%s method=%s%s%s: %s",
        loggable(principal or "-"),
        action,
        method,
        on_job,
        over,
        reason,
        extra=extra,
    )
