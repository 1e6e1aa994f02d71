"""Scheduling with real cgroup limits: budgets from declared limits, jobs that could never fit,
signals that reach a daemonized child through the cgroup, live usage in the record."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import DAEMONIZE, cgroup_dirs_named
from helpers import alive, wait_until

from worker_core import Config, EndReason, InvalidSpec, JobSpec, JobState, Limits
from worker_core._engine import Engine
from worker_core.plugin import Job, hookimpl

GIB = 1 << 30


class Running:
    """The peak of jobs between PENDING and ENDED, and of their summed CPU limits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, float] = {}
        self.peak_jobs = 0
        self.peak_cpu = 0.0

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        with self.lock:
            if job.state is JobState.PENDING:
                self.now[job.id] = job.spec.limits.cpu or 0.0
                self.peak_jobs = max(self.peak_jobs, len(self.now))
                self.peak_cpu = max(self.peak_cpu, sum(self.now.values()))
            elif job.state is JobState.ENDED:
                self.now.pop(job.id, None)


@pytest.fixture
def limited(parent: str) -> Iterator[tuple[Engine, Running]]:
    running = Running()
    config = Config.from_mapping(
        {"engine": {"stop_grace": 1.0}, "plugins": {"cgroups": {"parent": parent}}}
    )
    with Engine(plugins=["cgroups", running], config=config) as engine:
        yield engine, running
    assert not cgroup_dirs_named(parent)


def test_jobs_asking_for_the_whole_host_run_one_at_a_time(limited: tuple[Engine, Running]) -> None:
    engine, running = limited
    cpus = engine._queue.cpu_budget  # type: ignore[union-attr]
    memory = 20 * GIB if engine._queue.memory_budget > 40 * GIB else GIB  # type: ignore[union-attr]
    spec = JobSpec("sh", args=["-c", "sleep 0.1"], limits=Limits(cpu=cpus, memory_max=memory))
    ids = [engine.submit(spec).id for _ in range(8)]
    jobs = [engine.wait(i, 120) for i in ids]
    assert all(j.end_reason is EndReason.EXITED and j.exit_code == 0 for j in jobs)
    assert running.peak_jobs == 1, "each asks for every CPU: never two at once"


def test_mixed_sizes_never_exceed_the_cpu_budget(limited: tuple[Engine, Running]) -> None:
    engine, running = limited
    budget = engine._queue.cpu_budget  # type: ignore[union-attr]
    sizes = [0.25, 0.5, 1.0, budget]
    ids = [
        engine.submit(
            JobSpec("sh", args=["-c", "sleep 0.05"], limits=Limits(cpu=sizes[i % len(sizes)]))
        ).id
        for i in range(100)
    ]
    for job_id in ids:
        assert engine.wait(job_id, 300).exit_code == 0
    assert 0 < running.peak_cpu <= budget + 1e-9


def test_a_job_that_could_never_fit_is_refused_at_submit(limited: tuple[Engine, Running]) -> None:
    engine, _ = limited
    budget = engine._queue.memory_budget  # type: ignore[union-attr]
    with pytest.raises(InvalidSpec, match=r"limits\.memory_max: asks for .* more than the"):
        engine.submit(JobSpec("/bin/true", limits=Limits(memory_max=budget + GIB)))
    assert engine.list() == [], "nothing was created"


def test_a_signal_reaches_a_daemonized_child_through_the_cgroup(
    limited: tuple[Engine, Running], tmp_path: Path
) -> None:
    engine, _ = limited
    job = engine.submit(
        JobSpec(sys.executable, args=["-c", DAEMONIZE + "import time; time.sleep(1000)\n"])
    )
    follower = engine.follow(job.id)
    line = b""
    deadline = time.monotonic() + 30
    while b"\n" not in line and time.monotonic() < deadline:
        for chunk in follower.read(timeout=1) or []:
            line += chunk.data
    grandchild = int(line.split()[0])
    assert alive(grandchild)
    engine.signal(job.id, signal.SIGKILL)
    assert wait_until(lambda: not alive(grandchild), 30), "the daemonized child was reached"
    ended = engine.wait(job.id, 30)
    assert ended.signal == signal.SIGKILL
    follower.close()


def test_get_of_a_running_job_shows_live_usage(limited: tuple[Engine, Running]) -> None:
    engine, _ = limited
    job = engine.submit(
        JobSpec(sys.executable, args=["-c", "x = bytearray(20 << 20); import time; time.sleep(60)"])
    )
    assert wait_until(lambda: engine.usage(job.id).get("memory_current", 0) > 20 << 20, 30)
    assert engine.usage(job.id)["cpu_seconds"] >= 0
    engine.stop(job.id, grace=0)
    assert engine.usage(job.id) == {}, "an ended job has no live usage"
