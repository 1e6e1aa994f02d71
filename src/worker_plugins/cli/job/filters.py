"""The flag types that name or choose jobs: ``--label KEY=VALUE`` and times (``7d``, an ISO time).

Each value is parsed by its click type, so a malformed one is a usage error naming the flag
(``Invalid value for '--label': 'novalue' is not KEY=VALUE (no '=')``) before anything is
sent. What only the server can judge (a label key's full syntax) is the server's message.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import click

from worker_plugins.cli.spec_options import PairType


def _label_key_problem(key: str) -> str | None:
    return None if key else "the label key is empty"


#: ``--label KEY=VALUE``: a ``(key, value)`` pair; the value may be empty.
LABEL = PairType("KEY=VALUE", _label_key_problem)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float | None:
    """Seconds in ``90s``, ``30m``, ``2h``, ``7d``, ``1w`` or a sum of them (``1h30m``);
    None if ``text`` is not a duration."""
    text = text.strip().lower()
    if not text or _DURATION_PART.sub("", text):
        return None
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_when(text: str, now: float | None = None) -> float:
    """A time in seconds since the epoch: a duration means that long before ``now`` (``7d``:
    a week ago), anything else is an ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00``,
    with an offset or ``Z``; without one, local time). ``ValueError`` for anything else."""
    seconds = parse_duration(text)
    if seconds is not None:
        # Longer ago than 1970 is the same as 1970 to a filter on record times.
        return max(0.0, (time.time() if now is None else now) - seconds)
    try:
        # A naive time is local, as a user typing it means.
        when = datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"{text!r} is neither a duration ago (90s, 30m, 2h, 7d, 1w) nor an ISO time "
            "(2024-05-01, 2024-05-01T12:00:00, 2024-05-01T12:00:00+02:00)"
        ) from None
    if when < 0:
        raise ValueError(f"{text!r} is before 1970")
    return when


class WhenType(click.ParamType[float]):
    """A point in time, given as a duration ago or an ISO time; see :func:`parse_when`."""

    name = "when"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


WHEN = WhenType()
