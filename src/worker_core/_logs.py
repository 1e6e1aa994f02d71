"""The ``worker`` program's log: text lines by default, JSON lines on request. Stdlib only.

Records go to stderr, where a service manager (journald) or a container runtime collects
them. A text line is ``TIME LEVEL LOGGER: MESSAGE``; a JSON line is one object per record::

    {"time": "2025-01-31T09:12:03.041+00:00", "level": "INFO", "logger": "worker.calls",
     "message": "alice Submit OK 3.1 ms job 9f...", "principal": "alice", "method": "Submit",
     "code": "OK", "duration_ms": 3.1, "job": "9f..."}

Every field a caller passes in ``extra`` becomes a key of the object, so a plugin logs
structured data with the standard library alone (``log.info("...", extra={"job": job.id})``);
a text line shows only the message, which must therefore say everything on its own.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

#: The values of ``worker --log-format`` (and ``WORKER_LOG_FORMAT``).
LOG_FORMATS = ("text", "json")

#: The text line of every record.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has: whatever else a record carries came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLinesFormatter(logging.Formatter):
    """Each record as one line of JSON: ``time`` (ISO 8601, UTC, milliseconds), ``level``,
    ``logger``, ``message``, then every field given in ``extra``, then ``exc`` (the
    traceback's text) and ``stack`` when the record has them.

    The line is pure ASCII (other characters are ``\\u`` escapes), so it is written whatever
    the stream's encoding, and a newline in a message or a field can never start a line of
    its own. A field that JSON cannot hold is written as its ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        document: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                document.setdefault(key, value)  # the four above cannot be overwritten
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=True, default=str)


def json_lines_logging() -> bool:
    """Whether the root logger writes JSON lines (``worker --log-format json``).

    For code that writes to stderr outside the log (``worker serve``'s status lines): with
    JSON lines on, it logs instead, so every line of the stream stays one JSON object.
    """
    return any(isinstance(h.formatter, JsonLinesFormatter) for h in logging.getLogger().handlers)


def log_level(verbosity: int) -> int:
    """WARNING, then INFO with ``-v``, DEBUG with ``-vv`` (and more)."""
    return logging.WARNING - 10 * min(max(verbosity, 0), 2)


def configure_logging(verbosity: int, log_format: str = "text") -> None:
    """Send the root logger to stderr at :func:`log_level` ``(verbosity)``, as text lines or
    JSON lines (``log_format``: one of :data:`LOG_FORMATS`).

    As :func:`logging.basicConfig`, it does nothing if the root logger has handlers already
    (a host application, or a test harness, configured logging itself).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLinesFormatter())
    logging.basicConfig(level=log_level(verbosity), format=TEXT_FORMAT, handlers=[handler])
