"""The plugin's configuration section, ``[plugins.sqlite]``."""

from __future__ import annotations

from typing import Any

import attrs

#: The ``synchronous`` settings offered, weakest first (SQLite's ``OFF`` is not: it can
#: corrupt the database on a power loss).
SYNCHRONOUS = ("normal", "full", "extra")


def _synchronous(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in SYNCHRONOUS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(SYNCHRONOUS)}, got {value!r}")


def _busy_timeout(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 3600:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be between 0 and 3600 seconds, got {value}")


@attrs.frozen
class SqliteConfig:
    """Settings of the ``sqlite`` job store (records in ``<state_dir>/jobs.sqlite3``, WAL).

    Every record is committed before the engine acknowledges it, so a crash of the server
    process loses nothing acknowledged whatever ``synchronous`` says, and the database is
    never corrupted by a crash or a power loss. ``synchronous`` decides what a power loss
    (or a kernel crash) may cost:

    - ``normal``: the WAL is synced at checkpoints, not at each commit; a power loss may roll
      back the transactions committed since the last sync (the newest records or state
      changes); the database stays consistent. The fastest.
    - ``full``: each commit is synced to the disk before it returns; a power loss loses
      nothing committed, at the price of one fsync per change.
    - ``extra``: as ``full``, and the directory is synced too where the journal mode needs it
      (it makes no difference in WAL mode; offered for file systems where that matters).
    """

    #: What a power loss may cost: "normal" (the last commits), "full" (nothing committed,
    #: an fsync per change) or "extra" (as full, also syncing the directory).
    synchronous: str = attrs.field(default="normal", validator=_synchronous)
    #: Seconds a write waits for a lock another connection holds (an operator's sqlite3
    #: shell) before it fails as "store unavailable".
    busy_timeout: float = attrs.field(default=5.0, validator=_busy_timeout)
    #: Check the database with PRAGMA quick_check at start (reads every page: set false only
    #: for a database so large that the check delays start too much).
    check_at_open: bool = True
