"""The human views of ``worker job``: durations, outcomes, the list table.

The jobs are the library's records, shown through their views (``view_of``) as ``worker
run`` shows its engine's; the client reads the same views from the wire (a test in
``test_cli_startup`` holds the two readings together).
"""

from __future__ import annotations

import pytest

from worker_core import EndReason, Job, JobSpec, JobState, Principal
from worker_plugins.cli.job.follow import exit_status
from worker_plugins.cli.job.render import duration, job_table, outcome, status_line
from worker_plugins.cli.job.view import JobView, view_of


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (12.34, "12.3s"), (245, "4m05s"), (7380, "2h03m"), (273600, "3d04h")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def _ended(reason: EndReason, **changes: object) -> JobView:
    return view_of(
        Job(
            id="j1",
            owner=Principal("alice"),
            spec=JobSpec("sleep", ("30",), timeout=2),
            state=JobState.ENDED,
            end_reason=reason,
            created_at=100.0,
            started_at=100.0,
            ended_at=103.0,
            **changes,  # type: ignore[arg-type]
        )
    )


@pytest.mark.parametrize(
    ("job", "words", "status"),
    [
        (_ended(EndReason.EXITED, exit_code=3), "exited with code 3", (3, None)),
        (_ended(EndReason.EXITED, signal=9), "killed by SIGKILL", (137, "killed by SIGKILL")),
        (_ended(EndReason.STOPPED, signal=15), "stopped on request (SIGTERM)", (143, "stopped")),
        (_ended(EndReason.STOPPED, signal=9), "stopped on request (SIGKILL)", (143, "stopped")),
        (_ended(EndReason.TIMED_OUT, signal=15), "timed out: ran past its 2s", (124, "timed out")),
        (_ended(EndReason.OOM_KILLED, signal=9), "OOM killer", (137, "OOM killer")),
        (
            _ended(EndReason.FAILED_TO_START, message="exec: Permission denied"),
            "failed to start: exec: Permission denied",
            (126, "failed to start"),
        ),
        (_ended(EndReason.LOST, message="the server restarted"), "lost", (75, "lost")),
        (_ended(EndReason.SHUTDOWN), "server's shutdown", (75, "shutdown")),
        (_ended(EndReason.DEPENDENCY_FAILED), "never ran", (125, "never ran")),
    ],
)
def test_outcomes_and_wait_exit_status(
    job: JobView, words: str, status: tuple[int, str | None]
) -> None:
    assert words in outcome(job)
    assert status_line(job) == f"j1 ended: {outcome(job)}"
    code, message = exit_status(job)
    assert code == status[0]
    if status[1] is None:
        assert message is None
    else:
        assert message is not None and status[1] in message


def test_table_columns_line_up() -> None:
    running = Job(
        id="j2",
        owner=None,
        spec=JobSpec("sh", ("-c", "x" * 100), name="build", labels={"team": "data", "a": "1"}),
        state=JobState.RUNNING,
        pid=42,
        created_at=90.0,
        started_at=91.0,
    )
    text = job_table([_ended(EndReason.EXITED, exit_code=0), view_of(running)], now=110.0)
    header, first, second = text.splitlines()  # oldest first
    assert header.index("COMMAND") == first.index("sh -c") == second.index("sleep 30")
    assert header.index("LABELS") == first.index("a=1,team=data")
    assert second[header.index("LABELS")] == "-"
    assert first.split()[:9] == [
        "j2",
        "build",
        "-",
        "running",
        "-",
        "-",
        "20.0s",
        "19.0s",
        "a=1,team=data",
    ]
    assert second.split()[:9] == ["j1", "-", "alice", "exited", "-", "0", "10.0s", "3.0s", "-"]
    assert first.endswith("...") and len(first.split("  ")[-1]) <= 60
