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
from helpers import ForkPath, kill_if_alive, proc_stat, running_engine, wait_dead, wait_until

from worker_core import EndReason, Engine, Job, JobSpec, JobState, Principal, hookimpl
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
        # The FIFO is not a cgroup file the launcher could stand in: the fork path, where the
        # launcher used to wait for each child.
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
    with running_engine([ForkPath(named="forked")], launchers=2) as engine:
        # Every way a launcher starts a job, mixed: posix_spawn, in place, forked.
        specs = [
            JobSpec(
                "/bin/sh",
                args=["-c", f"echo {i}"],
                cwd="/tmp" if i % 2 else "/",
                name="forked" if i % 3 == 0 else "",
            )
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


def test_a_launcher_that_dies_right_after_answering_a_spawn_loses_that_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The launcher answers the spawn and dies; the engine handles its death (the job is not
    # yet among its running ones) before the submitting thread has recorded the job as
    # started. The job must still end LOST and be killed, not stay RUNNING for ever.
    with running_engine(launchers=1) as engine:
        client = engine._launchers.clients[0]
        answered = client.spawn

        def spawn_then_die(*args: Any) -> tuple[int, int]:
            pid, pidfd = answered(*args)
            os.kill(client.pid, signal.SIGKILL)
            assert wait_until(lambda: not client.alive, 30)  # its death handled first
            return pid, pidfd

        monkeypatch.setattr(client, "spawn", spawn_then_die)
        job = engine.submit(JobSpec("/bin/sleep", args=["300"]))
        monkeypatch.undo()
        ended = engine.wait(job.id, 60)
        assert ended.end_reason is EndReason.LOST, ended
        assert "launcher" in (ended.message or "")
        assert job.pid is not None and wait_dead(job.pid, 30), "a LOST job is still running"
        # The next job starts on a new launcher.
        after = engine.submit(JobSpec("/bin/true"))
        assert engine.wait(after.id, 30).end_reason is EndReason.EXITED


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


class IntoCgroup:
    """Puts every job into one cgroup made by the test (``cgroup_procs``)."""

    def __init__(self, cgroup: Path) -> None:
        self.cgroup = cgroup

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        plan.cgroup_procs.append(str(self.cgroup / "cgroup.procs"))


@pytest.mark.skipif(not (V2_ROOT / "cgroup.procs").exists(), reason="no cgroup v2 hierarchy")
@pytest.mark.parametrize(
    ("forked", "placement"),
    [(False, "a spawn from inside it"), (True, "clone3")],
    ids=["spawned from inside", "cloned into"],
)
def test_a_job_starts_inside_its_cgroup_v2(
    caplog: pytest.LogCaptureFixture, forked: bool, placement: str
) -> None:
    # This host's v2 hierarchy has no controllers, but membership is what both placements
    # give: the job's first look at /proc/self/cgroup already shows it inside. A plan with
    # nothing else for the child is posix_spawned by the launcher from inside the cgroup;
    # one that needs the fork path is cloned into it (CLONE_INTO_CGROUP).
    name = f"worker-test-clone3-{uuid.uuid4().hex[:8]}"
    cgroup = V2_ROOT / name
    cgroup.mkdir()

    into = IntoCgroup(cgroup)
    plugins: list[object] = [into, ForkPath()] if forked else [into]
    try:
        caplog.set_level("DEBUG", logger="worker.launcher")
        with running_engine(plugins) as engine:
            job = engine.submit(JobSpec("/bin/cat", args=["/proc/self/cgroup"]))
            assert engine.wait(job.id, 30).end_reason is EndReason.EXITED
            lines = engine.output(job.id).decode().splitlines()
            launchers = [client.pid for client in engine._launchers.clients]
            # The launcher went back to its own cgroup after the spawn.
            assert not set(launchers) & set(_pids(cgroup / "cgroup.procs"))
        assert f"0::/{name}" in lines
        assert f"placed in its cgroup by {placement}" in caplog.text
    finally:
        assert wait_until(lambda: not _pids(cgroup / "cgroup.procs"), 30)
        cgroup.rmdir()


def _pids(procs: Path) -> list[int]:
    return [int(p) for p in procs.read_text().split()]


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A fresh v1 pids cgroup, removed (once empty) afterwards."""
    root = Path("/sys/fs/cgroup/pids")
    if not (root / "cgroup.procs").exists():
        pytest.skip("no v1 pids hierarchy")
    cgroup = root / f"worker-test-inplace-{uuid.uuid4().hex[:8]}"
    cgroup.mkdir()
    try:
        yield cgroup
    finally:
        assert wait_until(lambda: not _pids(cgroup / "cgroup.procs"), 30)
        cgroup.rmdir()


def test_a_spawn_from_inside_a_v1_cgroup_leaves_the_launcher_where_it_was(
    pids_cgroup: Path,
) -> None:
    # pids is v1 here: the launcher joins the job's cgroup for the spawn and goes back.
    (pids_cgroup / "pids.max").write_text("8")
    with running_engine([IntoCgroup(pids_cgroup)]) as engine:
        before = {
            c.pid: Path(f"/proc/{c.pid}/cgroup").read_text() for c in engine._launchers.clients
        }
        job = engine.submit(JobSpec("/bin/sleep", args=["30"], cwd="/tmp"))
        try:
            assert _pids(pids_cgroup / "cgroup.procs") == [job.pid]
            assert os.readlink(f"/proc/{job.pid}/cwd") == "/tmp"
            for pid, text in before.items():
                assert Path(f"/proc/{pid}/cgroup").read_text() == text
                assert os.readlink(f"/proc/{pid}/cwd") == "/"
        finally:
            engine.stop(job.id, grace=0)


def test_an_unprivileged_job_is_born_inside_its_v1_cgroup(pids_cgroup: Path) -> None:
    # runas gives the job an identity: a restricted launcher joins the cgroup, the child gets
    # its uid from subprocess's fork in C, and the launcher goes back.
    (pids_cgroup / "pids.max").write_text("8")
    with running_engine([IntoCgroup(pids_cgroup), "runas"]) as engine:
        job = engine.submit(JobSpec("/bin/sleep", args=["30"], cwd="/tmp"), Principal("alice"))
        try:
            assert _pids(pids_cgroup / "cgroup.procs") == [job.pid]
            assert "Uid:\t65534\t65534\t65534\t65534" in Path(f"/proc/{job.pid}/status").read_text()
            assert os.readlink(f"/proc/{job.pid}/cwd") == "/tmp"
            launchers = {c.pid for c in engine._restricted_launchers.clients}
            assert proc_stat(job.pid).ppid in launchers
            for pid in launchers:
                assert os.readlink(f"/proc/{pid}/cwd") == "/"
        finally:
            engine.stop(job.id, grace=0)


def test_a_job_whose_pids_max_leaves_no_room_for_the_launcher_still_starts(
    pids_cgroup: Path,
) -> None:
    # pids.max 1: the launcher inside the cgroup would take the only slot, so the spawn
    # from inside fails with EAGAIN and the job is started the other way (the child joins).
    (pids_cgroup / "pids.max").write_text("1")
    with running_engine([IntoCgroup(pids_cgroup)]) as engine:
        job = engine.submit(JobSpec("/bin/echo", args=["alone"]))
        assert engine.wait(job.id, 30).end_reason is EndReason.EXITED
        assert engine.output(job.id) == b"alone\n"
