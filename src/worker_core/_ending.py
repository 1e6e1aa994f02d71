"""Why a job ended, and how to say it: pure decisions, kept apart from the engine's threads."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import attrs

from ._jobstore import FinishedSummary
from ._model import EndReason, ExitResult

_STOP_MESSAGES = {
    EndReason.STOPPED: "stopped on request",
    EndReason.SHUTDOWN: "the worker shut down while it ran",
    EndReason.DEPENDENCY_FAILED: "a job it depends on did not end as required",
}


def end_reason(
    result: ExitResult,
    *,
    start_error: str | None,
    lost: str | None,
    stop_reason: EndReason | None,
    timeout: float | None,
) -> tuple[EndReason, str]:
    """The end reason and message of a job from what is known when it has ended.

    Precedence: it never started; the engine lost it; the OOM killer took the job itself (a
    grandchild's OOM kill is a fact, not the end); someone stopped it (or its time limit, or
    a shutdown); otherwise it exited on its own.
    """
    if start_error is not None:
        return EndReason.FAILED_TO_START, start_error
    if lost is not None:
        return EndReason.LOST, lost
    if result.oom_killed and result.signal == signal.SIGKILL:
        return EndReason.OOM_KILLED, "killed by the OOM killer (memory limit reached)"
    if stop_reason is EndReason.TIMED_OUT:
        return stop_reason, f"ran past its {timeout or 0:g}s time limit"
    if stop_reason is not None:
        return stop_reason, _STOP_MESSAGES.get(stop_reason, stop_reason.value)
    if result.exit_code is not None:
        return EndReason.EXITED, f"exited with code {result.exit_code}"
    return EndReason.EXITED, f"killed by signal {result.signal} ({signal_name(result.signal)})"


def signal_name(signum: int | None) -> str:
    if signum is None:
        return "?"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


@attrs.frozen
class Retention:
    """How much finished history to keep; 0 disables a bound."""

    max_jobs: int
    max_age: float
    max_output_bytes: int


def expired(finished: Iterable[FinishedSummary], keep: Retention, now: float) -> list[str]:
    """Ids of finished jobs past any bound, given them most recently ended first: the
    newest are kept while they fit."""
    out: list[str] = []
    total = 0
    for count, summary in enumerate(finished, 1):
        total += summary.output_bytes
        if (
            (keep.max_jobs and count > keep.max_jobs)
            or (keep.max_age and now - summary.ended_at > keep.max_age)
            or (keep.max_output_bytes and total > keep.max_output_bytes)
        ):
            out.append(summary.job_id)
    return out
