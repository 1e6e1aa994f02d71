"""Several launchers, and a launcher that never waits on one child.

A child's setup is held open deterministically with a FIFO: a test plugin adds the FIFO's
path to the plan's ``cgroup_procs``, and the child's write of "0" into it blocks (in setup,
before exec) until the test opens the FIFO for reading. Nothing here measures time; every
wait is bounded.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import kill_if_alive, running_engine, wait_dead, wait_until

from worker_core import EndReason, Engine, Job, JobSpec, JobState, hookimpl
from worker_core.plugin import SpawnPlan

V2_ROOT = Path("/sys/fs/cgroup/unified")


class HoldSetup:
    """Adds ``fifo`` to the cgroups a job named ``held`` joins: its setup blocks until the
    FIFO is opened for reading."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        if job.spec.name == "held":
            plan.cgroup_procs.append(str(self.fifo))


class Release:
    """Open the FIFO for reading (unblocking every child writing to it) and drain it."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.fd: int | None = None

    def __call__(self) -> None:
        self.fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "hold"
    os.mkfifo(path)
    yield path


def submit_in_thread(engine: Engine, spec: JobSpec) -> tuple[threading.Thread, list[Any]]:
    """Submit on a thread (the submit of a held job returns only once its setup ends)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(engine.submit(spec))
        except BaseException as exc:  # surfaced by the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def setup_children(engine: Engine) -> list[int]:
    """PIDs of launcher children (jobs and children still in setup)."""
    pids = []
    for client in engine._launchers.clients:
        text = Path(f"/proc/{client.pid}/task/{client.pid}/children").read_text()
        pids.extend(int(p) for p in text.split())
    return pids


def test_a_launcher_serves_other_spawns_while_a_child_is_still_setting_up(fifo: Path) -> None:
    release = Release(fifo)
    with running_engine([HoldSetup(fifo)], launchers=1) as engine:
        # /tmp as cwd: the fork path, where the launcher used to wait for each child.
        held = JobSpec("/bin/echo", args=["held ran"], name="held", cwd="/tmp")
        thread, result = submit_in_thread(engine, held)
        try:
            assert wait_until(lambda: len(setup_children(engine)) == 1, 30)
            # Both paths go through while the held child sits in setup.
            for cwd in ("/", "/tmp"):
                other = engine.submit(JobSpec("/bin/echo", args=[cwd], cwd=cwd))
                ended = engine.wait(other.id, 30)
                assert ended.end_reason is EndReason.EXITED
                assert engine.output(other.id) == f"{cwd}\n".encode()
            assert thread.is_alive(), "the held job's submit returned before its setup ended"
        finally:
            release()
            thread.join(30)
            release.close()
        assert not thread.is_alive()
        (job,) = result
        assert isinstance(job, Job)
        assert engine.wait(job.id, 30).end_reason is EndReason.EXITED
        assert engine.output(job.id) == b"held ran\n"


def test_several_launchers_start_when_spawns_overlap_and_each_job_runs_once() -> None:
    with running_engine(launchers=2) as engine:
        specs = [
            JobSpec("/bin/sh", args=["-c", f"echo {i}"], cwd="/tmp" if i % 2 else "/")
            for i in range(200)
        ]

        def run(spec: JobSpec) -> tuple[str, bytes, Job]:
            job = engine.submit(spec)
            ended = engine.wait(job.id, 60)
            return spec.args[1], engine.output(job.id), ended

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(run, specs))
        for command, output, ended in results:
            assert ended.end_reason is EndReason.EXITED and ended.exit_code == 0
            assert output == f"{command.split()[1]}\n".encode(), "a job ran twice or not at all"
        pids = [ended.pid for _, _, ended in results]
        assert len(set(pids)) == len(pids)
        assert len({ended.id for _, _, ended in results}) == 200
        # At most the configured number, and jobs still start after the spawns spread out.
        assert 1 <= len(engine._launchers.clients) <= 2


def test_launcher_death_with_a_spawn_in_flight_loses_only_its_own_jobs(fifo: Path) -> None:
    release = Release(fifo)
    with running_engine([HoldSetup(fifo)], launchers=2) as engine:
        first = engine._launchers.clients[0]
        held = JobSpec("/bin/echo", args=["held ran once"], name="held", cwd="/tmp")
        thread, result = submit_in_thread(engine, held)
        try:
            assert wait_until(lambda: len(setup_children(engine)) == 1, 30)
            # A spawn that finds every launcher busy starts another in the background.
            on_first = engine.submit(JobSpec("/bin/sleep", args=["300"]))
            assert engine._jobs[on_first.id].launcher is first
            assert wait_until(lambda: len(engine._launchers.clients) == 2, 30)
            on_second = engine.submit(JobSpec("/bin/sleep", args=["300"]))
            second = engine._jobs[on_second.id].launcher
            assert second is not None and second is not first
            setup_pid = next(
                pid for pid in setup_children(engine) if pid not in (on_first.pid, on_second.pid)
            )

            os.kill(first.pid, signal.SIGKILL)

            lost = engine.wait(on_first.id, 60)
            assert lost.end_reason is EndReason.LOST and "launcher" in lost.message
            assert wait_dead(on_first.pid, 30), "a LOST job is still running"  # type: ignore[arg-type]
            # The child that was setting up died with its launcher (parent-death signal),
            # before it could exec; the job is spawned again, by the launcher that lives.
            assert wait_dead(setup_pid, 30), "a child in setup outlived its launcher"
            assert engine.get(on_second.id).state is JobState.RUNNING
            assert wait_until(lambda: second.in_flight == 1, 30)
        finally:
            release()
            thread.join(30)
            release.close()
            for job_id in (on_first.id, on_second.id):
                pid = engine.get(job_id).pid
                if pid is not None:
                    kill_if_alive(pid)
        (job,) = result
        assert isinstance(job, Job), job
        assert engine.wait(job.id, 30).end_reason is EndReason.EXITED
        assert engine.output(job.id) == b"held ran once\n", "the held job ran twice"
        assert engine._jobs.get(job.id) is None or engine._jobs[job.id].launcher is second


def test_a_child_stuck_in_setup_is_killed_when_the_engine_shuts_down(fifo: Path) -> None:
    with running_engine([HoldSetup(fifo)], launchers=1) as engine:
        launcher = engine._launchers.clients[0]
        thread, result = submit_in_thread(engine, JobSpec("/bin/true", name="held", cwd="/tmp"))
        assert wait_until(lambda: len(setup_children(engine)) == 1, 30)
        (child,) = setup_children(engine)
    thread.join(30)
    assert not thread.is_alive()
    assert wait_dead(child, 30), "a child in setup outlived the engine"
    assert wait_dead(launcher.pid, 30)
    (outcome,) = result
    # Shut down in the middle of its start: it did not run, and says so.
    # Shut down in the middle of its start: it did not run, and its record says so.
    assert isinstance(outcome, Job)
    assert outcome.state is JobState.ENDED and outcome.end_reason is EndReason.FAILED_TO_START


@pytest.mark.skipif(not (V2_ROOT / "cgroup.procs").exists(), reason="no cgroup v2 hierarchy")
def test_a_job_is_cloned_straight_into_its_cgroup_v2(caplog: pytest.LogCaptureFixture) -> None:
    # This host's v2 hierarchy has no controllers, but membership is what CLONE_INTO_CGROUP
    # gives: the job's first look at /proc/self/cgroup already shows it inside.
    name = f"worker-test-clone3-{uuid.uuid4().hex[:8]}"
    cgroup = V2_ROOT / name
    cgroup.mkdir()

    class IntoV2:
        @hookimpl
        def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
            plan.cgroup_procs.append(str(cgroup / "cgroup.procs"))

    try:
        caplog.set_level("DEBUG", logger="worker.launcher")
        with running_engine([IntoV2()]) as engine:
            job = engine.submit(JobSpec("/bin/cat", args=["/proc/self/cgroup"]))
            assert engine.wait(job.id, 30).end_reason is EndReason.EXITED
            lines = engine.output(job.id).decode().splitlines()
        assert f"0::/{name}" in lines
        assert "placed in its cgroup by clone3" in caplog.text
    finally:
        assert wait_until(lambda: not (cgroup / "cgroup.procs").read_text().strip(), 30)
        cgroup.rmdir()
