"""The SQLite store's group commit, and the final records it keeps in memory.

Writes that queue up while another commits are committed together by whoever holds the
store's lock. Each write still returns only once its own change is in the file (read back
here through a connection of its own, as an operator's shell or the next server would), one
write's failure fails that write only, and a store that cannot commit fails every queued
write with nothing half written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from helpers import wait_until
from jobstore_helpers import ended, make_job, opened, running

from worker_core.plugin import Job, JobState, StoreUnavailable, job_from_dict
from worker_plugins.sqlite import SqliteConfig, SqliteJobStore
from worker_plugins.sqlite import store as sqlite_store

TIMEOUT = 30.0


def in_file(path: Path, job_id: str) -> Job | None:
    """The record of ``job_id`` as the file holds it, read through a connection of its own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=TIMEOUT)
    try:
        row = conn.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        conn.close()
    return job_from_dict(json.loads(row[0])) if row else None


Outcome = tuple[str, Any]


def queued_together(store: SqliteJobStore, calls: list[Callable[[], object]]) -> list[Outcome]:
    """Start each of ``calls`` on a thread of its own while this test holds the store's lock,
    so that they all queue up behind it, then let them go: the first to take the lock
    commits them all. Returns each call's ("ok", result) or ("error", exception)."""
    outcomes: list[Outcome | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            outcomes[i] = ("ok", calls[i]())
        except BaseException as exc:
            outcomes[i] = ("error", exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with store._lock:
        for thread in threads:
            thread.start()
        queued = wait_until(lambda: len(store._queue) == len(calls), timeout=TIMEOUT)
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a write never returned"
    assert queued, "the writes did not all queue up behind the lock"
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


def test_queued_writes_each_return_once_their_change_is_in_the_file(db: Path) -> None:
    with opened(db) as store:
        before = make_job()
        store.add(before)
        jobs = [make_job(labels={"n": str(i)}) for i in range(6)]
        calls: list[Callable[[], object]] = [lambda job=job: store.add(job) for job in jobs]
        calls.append(lambda: store.update(running(before)))
        outcomes = queued_together(store, calls)
        assert [kind for kind, _ in outcomes] == ["ok"] * len(calls)
        for job in jobs:
            assert in_file(db, job.id) == job
        assert in_file(db, before.id) == running(before)
        assert not store._conn.in_transaction  # type: ignore[union-attr]


def test_one_failing_write_fails_only_itself(db: Path) -> None:
    with opened(db) as store:
        taken = make_job()
        store.add(taken)
        others = [make_job() for _ in range(4)]
        calls: list[Callable[[], object]] = [lambda job=job: store.add(job) for job in others]
        calls.insert(2, lambda: store.add(attrs.evolve(make_job(), id=taken.id)))
        outcomes = queued_together(store, calls)
        kind, error = outcomes[2]
        assert kind == "error" and isinstance(error, ValueError)
        assert f"job {taken.id} is already in the store" in str(error)
        assert [kind for i, (kind, _) in enumerate(outcomes) if i != 2] == ["ok"] * 4
        for job in others:
            assert in_file(db, job.id) == job
        assert in_file(db, taken.id) == taken


def test_two_queued_adds_with_one_key_leave_one_record(db: Path) -> None:
    with opened(db) as store:
        first, second = make_job(key="once"), make_job(key="once")
        outcomes = queued_together(store, [lambda: store.add(first), lambda: store.add(second)])
        winners = {result.id for kind, result in outcomes if kind == "ok"}
        assert len(winners) == 1, outcomes
        (winner,) = winners
        assert in_file(db, winner) is not None
        assert in_file(db, ({first.id, second.id} - winners).pop()) is None


def test_a_store_that_cannot_commit_fails_every_queued_write_and_keeps_the_file_whole(
    db: Path,
) -> None:
    with opened(db, SqliteConfig(busy_timeout=0.2)) as store:
        present = make_job()
        store.add(present)
        new = [make_job(), make_job(labels={"a": "b"})]
        other = sqlite3.connect(db, isolation_level=None, timeout=TIMEOUT)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            calls: list[Callable[[], object]] = [lambda job=job: store.add(job) for job in new]
            calls.append(lambda: store.update(running(present)))
            calls.append(lambda: store.remove([present.id]))
            outcomes = queued_together(store, calls)
            other.execute("ROLLBACK")
        finally:
            other.close()
        for kind, error in outcomes:
            assert kind == "error" and isinstance(error, StoreUnavailable), outcomes
            assert "lock" in str(error)
        assert all(in_file(db, job.id) is None for job in new)
        assert in_file(db, present.id) == present
        store.update(running(present))  # and it commits again once the lock is free
        assert in_file(db, present.id) == running(present)


def test_an_update_is_committed_when_it_returns(db: Path) -> None:
    with opened(db) as store:
        job = make_job()
        store.add(job)
        store.update(running(job))
        assert in_file(db, job.id) == running(job)
        store.update(ended(running(job)))
        assert in_file(db, job.id) == ended(running(job))


# --- final records kept in memory ------------------------------------------------------------


def test_a_final_record_read_right_after_it_ended_is_the_files(db: Path) -> None:
    with opened(db) as store:
        job = make_job(labels={"team": "a"})
        store.add(job)
        final = ended(running(job), output_bytes=12, oom_killed=False, cpu_seconds=0.25)
        store.update(final)
        assert store.get(job.id) == final == in_file(db, job.id)
    with opened(db) as reopened:
        assert reopened.get(job.id) == final


def test_a_removed_record_is_not_read_from_memory(db: Path) -> None:
    with opened(db) as store:
        job = make_job()
        store.add(job)
        store.update(ended(job))
        store.remove([job.id])
        assert store.get(job.id) is None


def test_a_fact_json_cannot_hold_reads_the_same_right_after_the_end_and_later(db: Path) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-value"

    with opened(db) as store:
        job = make_job()
        store.add(job)
        store.update(ended(job, odd=Opaque(), pair=(1, 2)))
        read = store.get(job.id)
        assert read is not None
        assert read.facts["odd"] == "opaque-value"
        assert read == in_file(db, job.id)


def test_the_memory_of_final_records_is_bounded(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "RECENT_ENDED", 5)
    with opened(db) as store:
        jobs = [make_job() for _ in range(8)]
        big = make_job(args=("-c", "x" * (sqlite_store.RECENT_ENDED_LARGEST + 1)))
        for job in [*jobs, big]:
            store.add(job)
            store.update(ended(job))
        assert len(store._recent) <= 5
        assert big.id not in store._recent  # too large to keep
        assert store._recent_bytes == sum(size for _, size in store._recent.values())
        for job in [*jobs, big]:
            assert store.get(job.id) == ended(job)  # from memory or from the file alike


def test_a_closed_store_reads_nothing_from_memory(db: Path) -> None:
    store = SqliteJobStore(db)
    job = make_job()
    store.add(job)
    store.update(ended(job))
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get(job.id)


def test_a_record_that_ends_again_replaces_the_one_in_memory(db: Path) -> None:
    with opened(db) as store:
        job = make_job()
        store.add(job)
        store.update(ended(job))
        later = attrs.evolve(ended(job), message="written again", state=JobState.ENDED)
        store.update(later)
        assert store.get(job.id) == later == in_file(db, job.id)
