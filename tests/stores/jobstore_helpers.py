"""Job records for the job-store tests: real :class:`Job` values, as the engine makes them;
and a SQLite job store opened for the length of a ``with``."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from worker_core.plugin import (
    OUTPUT_BYTES_FACT,
    EndReason,
    Job,
    JobSpec,
    JobState,
    Principal,
)
from worker_plugins.sqlite import SqliteConfig, SqliteJobStore


@contextlib.contextmanager
def opened(path: Path, config: SqliteConfig | None = None) -> Iterator[SqliteJobStore]:
    store = SqliteJobStore(path, config)
    try:
        yield store
    finally:
        store.close()


def make_job(
    *,
    owner: str | None = "alice",
    name: str = "",
    labels: Mapping[str, str] | None = None,
    key: str | None = None,
    created_at: float | None = None,
    job_id: str | None = None,
    args: tuple[str, ...] = ("-c", "exit 0"),
) -> Job:
    """A new (QUEUED) record with a fresh id, as a submit makes it."""
    return Job(
        id=job_id or uuid.uuid4().hex,
        owner=Principal(owner) if owner is not None else None,
        spec=JobSpec("/bin/sh", args, env={"LANG": "C.UTF-8"}, name=name, labels=labels or {}),
        state=JobState.QUEUED,
        created_at=time.time() if created_at is None else created_at,
        idempotency_key=key,
    )


def running(job: Job, pid: int = 4242) -> Job:
    return attrs.evolve(job, state=JobState.RUNNING, pid=pid, started_at=job.created_at + 0.5)


def ended(job: Job, at: float | None = None, output_bytes: int | None = None, **facts: Any) -> Job:
    """``job`` ended with exit code 0 at ``at`` (default: a second after it was created)."""
    if output_bytes is not None:
        facts[OUTPUT_BYTES_FACT] = output_bytes
    return attrs.evolve(
        job,
        state=JobState.ENDED,
        exit_code=0,
        end_reason=EndReason.EXITED,
        ended_at=job.created_at + 1 if at is None else at,
        facts={**job.facts, **facts},
    )
