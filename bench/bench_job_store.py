"""Job stores: the cost of one job's records in the memory store and the SQLite store.

Per job, what the engine does to its record: ``add`` (the submit), two ``update``s (running,
then ended with its facts) and a ``get``. The SQLite store runs on a real disk (``--dir``,
default /var/tmp: a tmpfs would make every fsync free) with ``synchronous`` normal and
full. Each store runs for at most ``--seconds`` (or ``--jobs`` jobs), so the whole run stays
under about 20 s.

    .venv/bin/python bench/bench_job_store.py [--seconds 4] [--jobs 20000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs

from worker_core.plugin import (
    OUTPUT_BYTES_FACT,
    EndReason,
    Job,
    JobSpec,
    JobState,
    JobStore,
    Principal,
)
from worker_plugins.memory.jobs import MemoryJobStore
from worker_plugins.sqlite import SqliteConfig, SqliteJobStore

SPEC = JobSpec(
    "/bin/sh",
    ("-c", "make -j4 all && ./run-tests --shard 3/8"),
    env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", "HOME": "/home/ci"},
    name="nightly",
    labels={"team": "infra", "tier": "1"},
)


def one_job(store: JobStore) -> None:
    job = Job(id=uuid.uuid4().hex, owner=Principal("alice"), spec=SPEC, state=JobState.QUEUED)
    store.add(job)
    now = time.time()
    started = attrs.evolve(job, state=JobState.RUNNING, pid=4242, started_at=now)
    store.update(started)
    store.update(
        attrs.evolve(
            started,
            state=JobState.ENDED,
            exit_code=0,
            end_reason=EndReason.EXITED,
            ended_at=now,
            facts={OUTPUT_BYTES_FACT: 123456, "cpu_seconds": 0.5, "memory_peak": 1 << 24},
        )
    )
    assert store.get(job.id) is not None


def measure(make: Callable[[], JobStore], seconds: float, max_jobs: int) -> tuple[float, int]:
    """Seconds per job, and the jobs measured."""
    store = make()
    try:
        for _ in range(min(50, max_jobs)):  # warm-up: caches, the WAL's first pages
            one_job(store)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while count < max_jobs and time.perf_counter() < deadline:
            one_job(store)
            count += 1
        return (time.perf_counter() - start) / count, count
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time budget per store")
    parser.add_argument("--jobs", type=int, default=20_000, help="at most this many jobs")
    parser.add_argument("--dir", default="/var/tmp", help="where the databases go (a disk)")
    args = parser.parse_args()

    results: list[tuple[str, float, int]] = []
    results.append(("memory", *measure(MemoryJobStore, args.seconds, args.jobs)))
    with tempfile.TemporaryDirectory(prefix="worker-bench-store-", dir=args.dir) as tmp:
        for synchronous in ("normal", "full"):
            make = functools.partial(
                SqliteJobStore, Path(tmp) / f"{synchronous}.sqlite3", SqliteConfig(synchronous)
            )
            name = f"sqlite synchronous={synchronous}"
            results.append((name, *measure(make, args.seconds, args.jobs)))

    base = results[0][1]
    print(f"per job: add + update (running) + update (ended) + get; databases in {args.dir}")
    print(f"{'store':<28} {'jobs':>7} {'us/job':>10} {'jobs/s':>10} {'vs memory':>10}")
    for name, per_job, count in results:
        print(
            f"{name:<28} {count:>7} {per_job * 1e6:>10.1f} {1 / per_job:>10.0f}"
            f" {per_job / base:>9.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
