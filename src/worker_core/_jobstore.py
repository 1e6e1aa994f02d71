"""The job store protocol: where job records live (the ``job_store`` hook provides one).

The engine keeps its live, mutable state per job in memory; every new snapshot of a job's
record goes to the store *before* anyone is told of it, and ``get``/``list`` read from it, so
a store that persists (``sqlite``) makes records outlive the process. The built-in ``memory``
store keeps them in a dict (the library's default).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Protocol, runtime_checkable

import attrs

from ._model import Job, JobState

#: A finished job's fact holding the bytes of output it wrote (both streams), for retention.
OUTPUT_BYTES_FACT = "output_bytes"


@attrs.frozen
class JobQuery:
    """Which records to list, newest first. Empty or None fields do not filter."""

    states: frozenset[JobState] = frozenset()
    owner: str | None = None
    name: str | None = None
    #: Every pair must be among the job's labels.
    labels: Mapping[str, str] = attrs.field(factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    ended_after: float | None = None
    ended_before: float | None = None
    #: Only records older than this sequence number (the cursor of the previous page).
    before_seq: int | None = None
    limit: int = 100


@attrs.frozen
class StoredJob:
    """A record with its sequence number: submission order, unique, never reused."""

    seq: int
    job: Job


@attrs.frozen
class FinishedSummary:
    """What retention needs of a finished job."""

    job_id: str
    ended_at: float
    output_bytes: int


class StoreUnavailable(Exception):
    """The store cannot commit now (disk full, read-only file system, I/O error)."""


@runtime_checkable
class JobStore(Protocol):
    """What the engine needs from the plugin that keeps job records.

    Every method may be called from any engine thread; the store serializes what it must.
    """

    def add(self, job: Job) -> Job:
        """Commit a new record and return it. If ``job.idempotency_key`` is set and a record
        of the same owner already has that key, commit nothing and return that record.
        Raises :class:`StoreUnavailable` if the record cannot be committed."""
        ...

    def update(self, job: Job) -> None:
        """Commit a newer snapshot of an existing record. Raises :class:`StoreUnavailable`
        if it cannot be committed (the engine keeps the snapshot in memory meanwhile and
        hands it again with the next change)."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The latest committed record, or None."""
        ...

    def query(self, query: JobQuery) -> list[StoredJob]:
        """At most ``query.limit`` records matching ``query``, newest (highest seq) first."""
        ...

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` job ids that start with ``prefix``."""
        ...

    def unfinished(self) -> list[Job]:
        """Every record not ENDED, in submission order (recovery, the durable queue)."""
        ...

    def finished(self) -> Iterator[FinishedSummary]:
        """Every ENDED record, most recently ended first (retention)."""
        ...

    def remove(self, job_ids: Collection[str]) -> None:
        """Delete these records (purge, retention). Unknown ids are ignored."""
        ...

    def close(self) -> None:
        """Release files and connections; fires once, at engine close."""
        ...
