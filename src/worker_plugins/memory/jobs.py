"""The in-memory job store (part of the ``memory`` plugin, loaded by default).

Records live in dicts for the life of the process: what a library user gets without a state
directory. The semantics are the ``sqlite`` store's, so the engine cannot tell them apart
(``tests/stores/test_job_store_contract.py`` holds both to one contract):

- sequence numbers come from a counter and are never reused, even after a removal;
- an idempotent add (a key, per owner; "no owner" is an owner of its own) returns the record
  that already holds the key, and the key is free again once that record is removed;
- time filters are strict: ``created_after=t`` keeps records created after ``t``, not at it;
- an ``update`` of an id the store does not hold (removed meanwhile) is ignored.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Collection, Iterator

from worker_core.plugin import (
    OUTPUT_BYTES_FACT,
    FinishedSummary,
    Job,
    JobQuery,
    JobState,
    StoredJob,
)


class MemoryJobStore:
    """:class:`~worker_core.plugin.JobStore` in dicts, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seq = 0
        self._jobs: dict[str, StoredJob] = {}
        # Ascending, so a page is a bisect and a walk down, not a scan of every record.
        self._seqs: list[int] = []
        self._by_seq: dict[int, str] = {}
        self._ids: list[str] = []  # sorted, so a prefix lookup is a bisect
        self._by_key: dict[tuple[str | None, str], str] = {}
        # Insertion order is seq order: the records not ENDED, for recovery.
        self._unfinished: dict[str, None] = {}

    def add(self, job: Job) -> Job:
        """Keep a new record; with an idempotency key its owner already used, return that one."""
        with self._lock:
            key = _idempotency_scope(job)
            if key is not None and key in self._by_key:
                return self._jobs[self._by_key[key]].job
            if job.id in self._jobs:
                raise ValueError(f"job {job.id} is already in the store")
            self._last_seq += 1
            seq = self._last_seq
            self._jobs[job.id] = StoredJob(seq, job)
            self._seqs.append(seq)  # the counter only grows: the list stays sorted
            self._by_seq[seq] = job.id
            bisect.insort(self._ids, job.id)
            if key is not None:
                self._by_key[key] = job.id
            if job.state is not JobState.ENDED:
                self._unfinished[job.id] = None
            return job

    def update(self, job: Job) -> None:
        """Replace the record of ``job.id``; ignored if the store no longer holds it."""
        with self._lock:
            stored = self._jobs.get(job.id)
            if stored is None:
                return
            self._jobs[job.id] = StoredJob(stored.seq, job)
            if job.state is JobState.ENDED:
                self._unfinished.pop(job.id, None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            stored = self._jobs.get(job_id)
            return stored.job if stored else None

    def query(self, query: JobQuery) -> list[StoredJob]:
        _check_limit(query.limit)
        found: list[StoredJob] = []
        with self._lock:
            end = len(self._seqs)
            if query.before_seq is not None:
                end = bisect.bisect_left(self._seqs, query.before_seq)
            for index in range(end - 1, -1, -1):
                if len(found) >= query.limit:
                    break
                stored = self._jobs[self._by_seq[self._seqs[index]]]
                if _matches(stored.job, query):
                    found.append(stored)
        return found

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids starting with ``prefix``, in sorted order."""
        _check_limit(limit)
        with self._lock:
            found: list[str] = []
            for index in range(bisect.bisect_left(self._ids, prefix), len(self._ids)):
                job_id = self._ids[index]
                if len(found) >= limit or not job_id.startswith(prefix):
                    break
                found.append(job_id)
            return found

    def unfinished(self) -> list[Job]:
        with self._lock:
            return [self._jobs[job_id].job for job_id in self._unfinished]

    def finished(self) -> Iterator[FinishedSummary]:
        """Most recently ended first; equal end times, the later submitted first."""
        with self._lock:
            ended = [s for s in self._jobs.values() if s.job.state is JobState.ENDED]
        ended.sort(key=lambda s: (_ended_at(s.job), s.seq), reverse=True)
        for stored in ended:
            yield FinishedSummary(stored.job.id, _ended_at(stored.job), _output_bytes(stored.job))

    def remove(self, job_ids: Collection[str]) -> None:
        with self._lock:
            for job_id in set(job_ids):
                stored = self._jobs.pop(job_id, None)
                if stored is None:
                    continue
                del self._seqs[bisect.bisect_left(self._seqs, stored.seq)]
                del self._by_seq[stored.seq]
                del self._ids[bisect.bisect_left(self._ids, job_id)]
                key = _idempotency_scope(stored.job)
                if key is not None and self._by_key.get(key) == job_id:
                    del self._by_key[key]
                self._unfinished.pop(job_id, None)

    def close(self) -> None:
        """Nothing to release: the records go with the process."""


def _idempotency_scope(job: Job) -> tuple[str | None, str] | None:
    if job.idempotency_key is None:
        return None
    return (job.owner_name, job.idempotency_key)


def _output_bytes(job: Job) -> int:
    value = job.facts.get(OUTPUT_BYTES_FACT, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ended_at(job: Job) -> float:
    return job.ended_at if job.ended_at is not None else job.created_at


def _check_limit(limit: int) -> None:
    # SQLite reads LIMIT -1 as "no limit": both stores refuse it rather than guess.
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")


def _matches(job: Job, query: JobQuery) -> bool:
    """Whether ``job`` passes every filter of ``query`` (the cursor and the limit aside)."""
    if query.states and job.state not in query.states:
        return False
    if query.owner and job.owner_name != query.owner:
        return False
    if query.name and job.spec.name != query.name:
        return False
    if any(job.spec.labels.get(key) != value for key, value in query.labels.items()):
        return False
    if query.created_after is not None and not job.created_at > query.created_after:
        return False
    if query.created_before is not None and not job.created_at < query.created_before:
        return False
    ended = _ended_at(job) if job.state is JobState.ENDED else None
    if query.ended_after is not None and not (ended is not None and ended > query.ended_after):
        return False
    return query.ended_before is None or (ended is not None and ended < query.ended_before)
