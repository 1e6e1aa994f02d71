"""The scheduler through the engine: caps and budgets, order and fair share, dependencies,
holds, begin times, signals, pause and resume, and the asyncio API. Real processes throughout;
cgroup-backed limits and freezing are tested in tests/cgroups/."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import proc_stat, running_engine, wait_until

from worker_core import (
    Dependency,
    DependencyKind,
    EndReason,
    Engine,
    FailedPrecondition,
    InvalidSpec,
    JobNotFound,
    JobSpec,
    JobState,
    Principal,
    QueueReason,
)
from worker_core.plugin import Action, Job, hookimpl

ALICE, BOB = Principal("alice"), Principal("bob")
BURN = [sys.executable, "-c", "while True: pass"]


class Concurrency:
    """Counts jobs between RUNNING and ENDED exactly (every transition is seen), and the order
    in which jobs started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.peak = 0
        self.started: list[Job] = []
        self.states: dict[str, list[JobState]] = {}

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        with self.lock:
            self.states.setdefault(job.id, []).append(job.state)
            if job.state is JobState.PENDING:
                self.running.add(job.id)
                self.started.append(job)
                self.peak = max(self.peak, len(self.running))
            elif job.state is JobState.ENDED:
                self.running.discard(job.id)


@pytest.fixture
def seen() -> Concurrency:
    return Concurrency()


def wait_all(engine: Engine, ids: list[str], timeout: float = 120) -> list[Job]:
    deadline = time.monotonic() + timeout
    return [engine.wait(i, max(0.0, deadline - time.monotonic())) for i in ids]


def test_the_running_cap_is_never_exceeded_and_every_job_runs(seen: Concurrency) -> None:
    with running_engine([seen], max_running=3) as engine:
        ids = [
            engine.submit(JobSpec("sh", args=["-c", f"sleep 0.0{i % 5}"])).id for i in range(100)
        ]
        jobs = wait_all(engine, ids)
    assert all(j.end_reason is EndReason.EXITED and j.exit_code == 0 for j in jobs)
    assert seen.peak == 3
    queued = [i for i in ids if JobState.QUEUED in seen.states[i]]
    assert queued, "some jobs had to wait"
    # A queued job went QUEUED -> PENDING -> RUNNING -> ENDED, never skipping the queue.
    assert seen.states[queued[-1]][:2] == [JobState.QUEUED, JobState.PENDING]


def test_budgets_from_reservations_bound_what_runs_at_once(seen: Concurrency) -> None:
    # Each job without a CPU limit reserves 0.5 CPU; the budget is half of the host's CPUs.
    with running_engine(
        [seen], default_cpu_reservation=0.5, cpu_budget_share=0.5, max_running=0
    ) as engine:
        host_cpus = engine._queue.cpu_budget  # type: ignore[union-attr]
        ids = [engine.submit(JobSpec("sh", args=["-c", "sleep 0.05"])).id for _ in range(30)]
        wait_all(engine, ids)
    assert 1 <= seen.peak <= max(1, int(host_cpus / 0.5))


def test_a_queued_job_shows_why_it_waits() -> None:
    with running_engine(max_running=1) as engine:
        first = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        second = engine.submit(JobSpec("/bin/true"))
        assert second.state is JobState.QUEUED
        assert engine.get(second.id).queue_reason is QueueReason.RUNNING_CAP
        engine.stop(first.id, grace=0)
        ended = engine.wait(second.id, 30)
        assert ended.end_reason is EndReason.EXITED and ended.queue_reason is None


def test_two_owners_take_turns_whatever_the_order_of_submission(seen: Concurrency) -> None:
    with running_engine([seen], max_running=1) as engine:
        blocker = engine.submit(JobSpec("/bin/sleep", args=["30"]), ALICE)
        ids = [engine.submit(JobSpec("/bin/true"), ALICE).id for _ in range(50)]
        ids += [engine.submit(JobSpec("/bin/true"), BOB).id for _ in range(50)]
        engine.stop(blocker.id, grace=0)
        wait_all(engine, ids)
    order = [j.owner_name for j in seen.started[1:]]
    assert order[:20] == ["alice", "bob"] * 10, order[:20]
    assert sorted(order) == ["alice"] * 50 + ["bob"] * 50


def test_priority_goes_first_and_submission_order_breaks_ties(seen: Concurrency) -> None:
    with running_engine([seen], max_running=1) as engine:
        blocker = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        low = [engine.submit(JobSpec("/bin/true", name=f"low{i}")).id for i in range(3)]
        high = [
            engine.submit(JobSpec("/bin/true", name=f"high{i}", priority=10)).id for i in range(3)
        ]
        engine.stop(blocker.id, grace=0)
        wait_all(engine, low + high)
    names = [j.spec.name for j in seen.started[1:]]
    assert names == ["high0", "high1", "high2", "low0", "low1", "low2"]


def test_a_failed_dependency_ends_the_whole_chain_without_running_it(seen: Concurrency) -> None:
    with running_engine([seen]) as engine:
        a = engine.submit(JobSpec("sh", args=["-c", "sleep 0.2; exit 3"]))
        b = engine.submit(JobSpec("/bin/true", after=[Dependency(a.id)]))
        c = engine.submit(JobSpec("/bin/true", after=[Dependency(b.id[:8])]))
        assert b.state is JobState.QUEUED and b.queue_reason is QueueReason.DEPENDENCY
        assert c.spec.after[0].job_id == b.id, "a prefix is resolved at submit"
        ended_b, ended_c = wait_all(engine, [b.id, c.id], 30)
    for ended in (ended_b, ended_c):
        assert ended.end_reason is EndReason.DEPENDENCY_FAILED
        assert ended.started_at is None and ended.pid is None
        assert JobState.RUNNING not in seen.states[ended.id]
    assert "exit with code 0" in ended_b.message


def test_after_any_and_after_fail_run_once_their_dependency_failed() -> None:
    with running_engine() as engine:
        a = engine.submit(JobSpec("sh", args=["-c", "exit 1"]))
        anyway = engine.submit(JobSpec("/bin/true", after=[Dependency(a.id, DependencyKind.ANY)]))
        on_fail = engine.submit(
            JobSpec("/bin/true", after=[Dependency(a.id, DependencyKind.FAILED)])
        )
        on_ok = engine.submit(JobSpec("/bin/true", after=[Dependency(a.id, DependencyKind.OK)]))
        got = wait_all(engine, [anyway.id, on_fail.id, on_ok.id], 30)
    assert [j.end_reason for j in got] == [
        EndReason.EXITED,
        EndReason.EXITED,
        EndReason.DEPENDENCY_FAILED,
    ]


def test_a_dependency_that_ends_as_its_dependant_is_queued_still_releases_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The interleaving a loaded machine produced once in CI: the dependant's submit read its
    # dependency's record while that job still ran, and the job ended (and the scheduler
    # released its dependants) before the dependant was registered as one. Forced here by
    # holding the registration until the dependency has ended.
    with running_engine() as engine:
        first = engine.submit(JobSpec("sleep", args=["0.3"]))
        assert first.state is JobState.RUNNING
        scheduler = engine._queue
        assert scheduler is not None
        enqueue = scheduler.enqueue

        def enqueue_once_the_dependency_ended(item, job, dependencies, begin_due):  # type: ignore[no-untyped-def]
            assert engine.wait(first.id, 30).end_reason is EndReason.EXITED
            return enqueue(item, job, dependencies, begin_due)

        monkeypatch.setattr(scheduler, "enqueue", enqueue_once_the_dependency_ended)
        after = engine.submit(JobSpec("/bin/true", after=[Dependency(first.id)]))
        monkeypatch.undo()
        ended = engine.wait(after.id, 30)
    assert ended.end_reason is EndReason.EXITED, ended


def test_a_dependency_must_exist_and_be_readable() -> None:
    class OwnersOnly:
        @hookimpl
        def authorize(self, principal, action, job):  # type: ignore[no-untyped-def]
            return action is Action.SUBMIT or job is None or job.owner_name == principal.name

    with running_engine([OwnersOnly()]) as engine:
        with pytest.raises(JobNotFound):
            engine.submit(JobSpec("/bin/true", after=[Dependency("0" * 32)]), ALICE)
        bobs = engine.submit(JobSpec("/bin/true"), BOB)
        with pytest.raises(JobNotFound):
            engine.submit(JobSpec("/bin/true", after=[Dependency(bobs.id)]), ALICE)
        assert [j.id for j in engine.list()] == [bobs.id], "nothing was created"


def test_hold_then_release_runs_the_job_and_release_of_others_is_refused() -> None:
    with running_engine() as engine:
        held = engine.submit(JobSpec("/bin/true", hold=True))
        assert held.state is JobState.HELD
        time_held = engine.get(held.id)
        assert time_held.state is JobState.HELD and time_held.started_at is None
        released = engine.release(held.id[:6])
        assert released.state in (
            JobState.QUEUED,
            JobState.PENDING,
            JobState.RUNNING,
            JobState.ENDED,
        )
        assert engine.wait(held.id, 30).exit_code == 0
        with pytest.raises(FailedPrecondition, match="only a held job"):
            engine.release(held.id)


def test_a_begin_time_delays_the_start() -> None:
    with running_engine() as engine:
        begin = time.time() + 1.0
        job = engine.submit(JobSpec("/bin/true", begin_at=begin))
        assert job.state is JobState.QUEUED and job.queue_reason is QueueReason.BEGIN_TIME
        ended = engine.wait(job.id, 30)
    assert ended.exit_code == 0
    assert ended.started_at is not None and ended.started_at >= begin


def test_a_stopped_queued_job_ends_without_ever_starting(seen: Concurrency) -> None:
    with running_engine([seen], max_running=1) as engine:
        blocker = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        queued = engine.submit(JobSpec("/bin/true"))
        stopped = engine.stop(queued.id)
        assert stopped.end_reason is EndReason.STOPPED and stopped.started_at is None
        assert "before it started" in stopped.message
        engine.stop(blocker.id, grace=0)
    assert seen.states[queued.id] == [JobState.QUEUED, JobState.ENDED]


def cpu_ticks(pid: int) -> int:
    """User plus system clock ticks of ``pid``."""
    stat = proc_stat(pid)
    assert stat is not None, f"process {pid} is gone"
    return stat.cpu_ticks


def test_pause_freezes_a_job_and_resume_lets_it_run_again_without_cgroups() -> None:
    with running_engine() as engine:
        job = engine.submit(JobSpec(BURN[0], args=BURN[1:]))
        assert job.pid is not None
        assert wait_until(lambda: cpu_ticks(job.pid) > 0, 30)  # type: ignore[arg-type]
        paused = engine.pause(job.id)
        assert paused.state is JobState.PAUSED
        assert wait_until(lambda: proc_stat(job.pid).state == "T", 10)  # type: ignore[arg-type, union-attr]
        before = cpu_ticks(job.pid)
        time.sleep(0.5)
        assert cpu_ticks(job.pid) == before, "a paused job gets no CPU"
        with pytest.raises(FailedPrecondition, match="only a running job can be paused"):
            engine.pause(job.id)
        assert engine.resume(job.id).state is JobState.RUNNING
        assert wait_until(lambda: cpu_ticks(job.pid) > before, 30)  # type: ignore[arg-type]
        with pytest.raises(FailedPrecondition, match="only a paused job can be resumed"):
            engine.resume(job.id)
        engine.pause(job.id)
        stopped = engine.stop(job.id, grace=5)
        assert stopped.end_reason is EndReason.STOPPED, "a paused job can be stopped"


def test_a_paused_jobs_time_limit_does_not_run() -> None:
    with running_engine() as engine:
        job = engine.submit(JobSpec("/bin/sleep", args=["30"], timeout=1.0))
        engine.pause(job.id)
        time.sleep(1.5)
        assert engine.get(job.id).state is JobState.PAUSED, "the limit is not spent while paused"
        engine.resume(job.id)
        ended = engine.wait(job.id, 30)
    assert ended.end_reason is EndReason.TIMED_OUT


def test_a_signal_reaches_every_process_of_the_job(tmp_path: Path) -> None:
    # Without cgroups "every process" is the job's process group and its descendants; a
    # daemonized child is reached through the cgroup (tests/cgroups/).
    marks = tmp_path / "marks"
    script = (
        f"sh -c 'trap \"echo child >> {marks}\" USR1; while :; do sleep 0.05; done' &"
        f" trap 'echo parent >> {marks}' USR1; echo ready; while :; do sleep 0.05; done"
    )
    with running_engine() as engine:
        job = engine.submit(JobSpec("sh", args=["-c", script]))
        follower = engine.follow(job.id)
        assert follower.read(timeout=10)
        time.sleep(0.3)  # the child installs its trap
        engine.signal(job.id, signal.SIGUSR1)
        assert wait_until(lambda: marks.exists() and len(marks.read_text().split()) == 2, 10)
        assert sorted(marks.read_text().split()) == ["child", "parent"]
        follower.close()
        engine.stop(job.id, grace=0)


def test_bad_control_requests_are_clear_errors() -> None:
    with running_engine() as engine:
        done = engine.submit(JobSpec("/bin/true"))
        engine.wait(done.id, 10)
        with pytest.raises(InvalidSpec, match="no such signal"):
            engine.signal(done.id, 999)
        with pytest.raises(FailedPrecondition, match="only a running"):
            engine.signal(done.id, signal.SIGTERM)
        with pytest.raises(InvalidSpec, match="priority"):
            JobSpec("/bin/true", priority=5000)
        with pytest.raises(InvalidSpec, match="begin_at"):
            engine.submit(JobSpec("/bin/true", begin_at=float("nan")))
        assert len(engine.list()) == 1


def test_the_asyncio_api_controls_jobs_too() -> None:
    async def scenario(engine: Engine) -> None:
        held = await engine.aio.submit(JobSpec(BURN[0], args=BURN[1:], hold=True))
        assert held.state is JobState.HELD
        await engine.aio.release(held.id)
        running = await engine.aio.get(held.id)
        assert wait_until(lambda: engine.get(held.id).state is JobState.RUNNING, 10)
        await engine.aio.pause(running.id)
        assert (await engine.aio.get(held.id)).state is JobState.PAUSED
        await engine.aio.resume(held.id)
        await engine.aio.signal(held.id, signal.SIGKILL)
        ended = await engine.aio.wait(held.id, 10)
        assert ended.signal == signal.SIGKILL
        page = await engine.aio.list_page(page_size=10)
        assert [j.id for j in page.jobs] == [held.id]

    with running_engine() as engine:
        asyncio.run(scenario(engine))


@pytest.fixture
def never_admit() -> Iterator[object]:
    class Gate:
        open = False

        @hookimpl
        def admit(self, job: Job) -> str | None:
            return None if self.open else "the gate is closed"

    yield Gate()


def test_an_admit_hook_delays_a_start_until_it_agrees(never_admit: object) -> None:
    with running_engine([never_admit]) as engine:
        job = engine.submit(JobSpec("/bin/true"))
        assert engine.get(job.id).state is JobState.QUEUED
        assert engine.get(job.id).queue_reason is QueueReason.PLUGIN
        never_admit.open = True  # type: ignore[attr-defined]
        # The scheduler asks again by itself (every ADMIT_RETRY_SECONDS): no nudge needed.
        assert engine.wait(job.id, 30).exit_code == 0
