"""The flag types that name or choose jobs: ``--label KEY=VALUE`` and times (``7d``, an ISO time).

Each value is parsed by its click type, so a malformed one is a usage error naming the flag
(``Invalid value for '--label': 'novalue' is not KEY=VALUE (no '=')``) before anything is
sent. What only the server can judge (a label key's full syntax) is the server's message.
"""

from __future__ import annotations

import time

from worker_plugins.cli.values import PairType, TimeType, iso_time, parse_duration

__all__ = ["LABEL", "WHEN", "parse_duration", "parse_when"]


def _label_key_problem(key: str) -> str | None:
    return None if key else "the label key is empty"


#: ``--label KEY=VALUE``: a ``(key, value)`` pair; the value may be empty.
LABEL = PairType("KEY=VALUE", _label_key_problem)


def parse_when(text: str, now: float | None = None) -> float:
    """A time in seconds since the epoch: a duration means that long before ``now`` (``7d``:
    a week ago), anything else is an ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00``,
    with an offset or ``Z``; without one, local time). ``ValueError`` for anything else."""
    seconds = parse_duration(text)
    if seconds is not None:
        # Longer ago than 1970 is the same as 1970 to a filter on record times.
        return max(0.0, (time.time() if now is None else now) - seconds)
    # A naive time is local, as a user typing it means.
    return iso_time(
        text.strip(),
        "a duration ago (90s, 30m, 2h, 7d, 1w) nor an ISO time "
        "(2024-05-01, 2024-05-01T12:00:00, 2024-05-01T12:00:00+02:00)",
    )


#: ``--created-after`` and the like: a duration ago or an ISO time (:func:`parse_when`).
WHEN = TimeType(parse_when)
