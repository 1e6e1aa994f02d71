"""The engine's private, mutable state for one job."""

from __future__ import annotations

import attrs

from ._executor import Ended
from ._launcher import ExitReport, LauncherClient
from ._model import EndReason, Job, JobState
from ._notify import Notifier
from ._output import Stream
from ._timers import Timer


@attrs.define
class TrackedJob:
    """The engine's private, mutable state for one job. Guarded by ``notifier``."""

    job: Job
    notifier: Notifier = attrs.Factory(Notifier)
    version: int = 0
    plan_ran: bool = False
    spawned: bool = False  # the pump has its pipes; exit handling may proceed
    exit_report: ExitReport | None = None
    remote_end: Ended | None = None  # how an executor's job ended
    start_error: str | None = None
    lost: str | None = None
    output_closed: bool = False
    finalizing: bool = False
    stop_reason: EndReason | None = None
    pidfd: int | None = None  # refers to exactly this job's main process, even after a reap
    launcher: LauncherClient | None = None  # the one that started it, reaps it, signals it
    kill_timer: Timer | None = None
    timeout_timer: Timer | None = None
    timeout_deadline: float | None = None  # monotonic; while running
    timeout_left: float | None = None  # seconds of time limit left; while paused
    # Resolved at submit; None for a job recovered after a restart (resolved at start).
    executable: str | None = None
    cwd: str | None = None
    other_timers: list[Timer] = attrs.Factory(list)
    offsets: dict[Stream, int] = attrs.Factory(lambda: {Stream.STDOUT: 0, Stream.STDERR: 0})
    lost_bytes: int = 0  # output the store could not keep (output thread only)
    # on_state_change events not yet delivered, and whether a thread is delivering them.
    # A list, not a deque: it rarely holds more than two, and an empty deque costs 760 bytes.
    events: list[tuple[Job, JobState | None]] = attrs.Factory(list)
    firing: bool = False
