"""What the plugin knows of the engine's unfinished jobs, kept from ``on_state_change``.

The engine exposes no count of its live jobs by state, and asking its job store at every
scrape would read every unfinished record. Each state change is one small update here
instead, and a scrape reads a handful of numbers. No ``prometheus_client`` import: this is
plain bookkeeping.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable

from worker_core.plugin import Job, JobState

#: The states a job is counted in by ``worker_jobs`` (every one but ENDED), in display order.
UNFINISHED_STATES: tuple[JobState, ...] = tuple(s for s in JobState if s is not JobState.ENDED)


class JobTracker:
    """The state of every unfinished job, and when each admitted job became PENDING.

    Fed from ``on_state_change``, which the engine calls concurrently for different jobs
    (in order for one job), so everything is under one lock, held for a dict update only.

    Jobs an earlier run left waiting (QUEUED, HELD) are taken back by the engine before
    ``startup`` without any event: :meth:`seed` adds them from the engine's records. Events
    can arrive before that (the scheduler may start a recovered job at once), so until the
    seed is in, the ids of jobs that ended are remembered and a stale record of them is not
    counted again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, JobState] = {}
        self._pending_since: dict[str, float] = {}
        self._ended_before_seed: set[str] | None = set()

    def changed(self, job: Job, previous: JobState | None) -> float | None:
        """Record ``job``'s new state; the seconds it took from PENDING to RUNNING when this
        change is that one (the spawn latency), else None."""
        now = time.monotonic()
        state = job.state
        with self._lock:
            began = self._pending_since.pop(job.id, None)
            if state is JobState.ENDED:
                self._states.pop(job.id, None)
                if self._ended_before_seed is not None:
                    self._ended_before_seed.add(job.id)
            else:
                self._states[job.id] = state
                if state is JobState.PENDING:
                    self._pending_since[job.id] = now
        if began is not None and previous is JobState.PENDING and state is JobState.RUNNING:
            return now - began
        return None

    def seed(self, jobs: Iterable[Job]) -> None:
        """Count ``jobs`` (the engine's unfinished records at startup) that no event has
        told about yet; from now on events alone keep the counts."""
        with self._lock:
            ended = self._ended_before_seed or set()
            for job in jobs:
                if job.is_finished or job.id in ended or job.id in self._states:
                    continue
                self._states[job.id] = job.state
            self._ended_before_seed = None

    def by_state(self) -> dict[JobState, int]:
        """Unfinished jobs per state, every state of :data:`UNFINISHED_STATES` present."""
        with self._lock:
            counts = Counter(self._states.values())
        return {state: counts[state] for state in UNFINISHED_STATES}
