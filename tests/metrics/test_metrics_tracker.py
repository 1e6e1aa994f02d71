"""The job tracker's bookkeeping when events and the startup seed cross (recovered jobs the
scheduler starts before ``startup`` runs), with real Job records moved by the engine's own
transition function."""

from __future__ import annotations

import time

from worker_core._model import transition
from worker_core.plugin import EndReason, Job, JobSpec, JobState
from worker_plugins.metrics.tracker import JobTracker


def _queued(job_id: str) -> Job:
    return Job(id=job_id, owner=None, spec=JobSpec("true"), state=JobState.QUEUED)


def test_a_seed_never_counts_again_a_job_whose_events_came_first() -> None:
    tracker = JobTracker()
    started, ended, untouched = _queued("a" * 32), _queued("b" * 32), _queued("c" * 32)
    # Before the seed: one recovered job left the queue, another ran and ended.
    pending = transition(started, JobState.PENDING)
    tracker.changed(pending, JobState.QUEUED)
    finished = transition(
        transition(ended, JobState.PENDING),
        JobState.ENDED,
        end_reason=EndReason.FAILED_TO_START,
        ended_at=time.time(),
    )
    tracker.changed(finished, JobState.PENDING)
    # The seed read the records before those events: all three still QUEUED.
    tracker.seed([started, ended, untouched])
    counts = tracker.by_state()
    assert (counts[JobState.QUEUED], counts[JobState.PENDING]) == (1, 1)
    assert sum(counts.values()) == 2


def test_spawn_latency_is_pending_to_running_only() -> None:
    tracker = JobTracker()
    tracker.seed([])
    job = Job(id="d" * 32, owner=None, spec=JobSpec("true"))
    assert tracker.changed(job, None) is None
    running = transition(job, JobState.RUNNING, pid=1, started_at=time.time())
    latency = tracker.changed(running, JobState.PENDING)
    assert latency is not None and latency >= 0
    # Stopped while starting: PENDING -> STOPPING is no spawn, and nothing is kept for it.
    other = Job(id="e" * 32, owner=None, spec=JobSpec("true"))
    tracker.changed(other, None)
    assert tracker.changed(transition(other, JobState.STOPPING), JobState.PENDING) is None
    assert tracker.by_state()[JobState.STOPPING] == 1
    assert tracker.by_state()[JobState.PENDING] == 0
