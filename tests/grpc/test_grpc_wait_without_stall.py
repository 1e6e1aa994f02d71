"""The event loop's waits never queue behind an engine thread that holds a job's lock.

An engine thread holds a job's notifier while it commits a change of state to the job
store; the gRPC transport's waits (Submit with ``wait_seconds``, Watch, Stop) run on the
server's one event loop. A job that has ended, or a record newer than the last one sent, is
read without that lock, so the loop serves every other call meanwhile; only waiting for a
change to come takes it. Real threads hold the lock here, as the engine's do.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import attrs
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, shell

from worker_core._aio import _until_finished
from worker_core._model import EndReason, Job, JobSpec, JobState, transition
from worker_core._tracked import TrackedJob
from worker_core._watch import JobWatcher
from worker_plugins.grpc_transport import worker_pb2 as pb

T = TypeVar("T")

#: How long the test lets a loop run while another thread holds the lock; it needs
#: microseconds. A loop that queued behind the lock would wait until the holder lets go,
#: which it does only after this (RPC_TIMEOUT, at the latest).
LOOP_BOUND = 5.0


def finishes_while_held(coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``coroutine`` on an event loop of its own thread, and return its result once it
    has finished while the lock is still held (the holder lets go only after this)."""
    results: list[T] = []
    loop_thread = threading.Thread(target=lambda: results.append(asyncio.run(coroutine())))
    loop_thread.start()
    loop_thread.join(LOOP_BOUND)
    assert not loop_thread.is_alive(), "the event loop queued behind the held lock"
    assert results
    return results[0]


def _record(state: JobState = JobState.RUNNING) -> Job:
    job = Job(id="f" * 32, owner=None, spec=JobSpec("/bin/true"), state=JobState.PENDING)
    job = transition(job, JobState.RUNNING, pid=4242, started_at=time.time())
    if state is JobState.ENDED:
        job = transition(
            job, JobState.ENDED, exit_code=0, end_reason=EndReason.EXITED, ended_at=time.time()
        )
    return job


@pytest.fixture
def held() -> Iterator[tuple[TrackedJob, threading.Event]]:
    """An entry whose notifier another thread holds until the event is set."""
    entry = TrackedJob(_record(JobState.ENDED))
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with entry.notifier:
            taken.set()
            release.wait(RPC_TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(RPC_TIMEOUT)
    try:
        yield entry, release
    finally:
        release.set()
        holder.join(RPC_TIMEOUT)


def test_waiting_for_an_ended_job_does_not_take_its_lock(
    held: tuple[TrackedJob, threading.Event],
) -> None:
    entry, _ = held
    finishes_while_held(lambda: _until_finished(entry, RPC_TIMEOUT))
    assert entry.job.is_finished


def test_watching_an_ended_job_gives_its_record_without_its_lock(
    held: tuple[TrackedJob, threading.Event],
) -> None:
    entry, _ = held

    async def watch() -> list[Job]:
        return [job async for job in JobWatcher(entry)]

    assert finishes_while_held(watch) == [entry.job]


def test_a_watcher_gets_each_record_once_and_ends_after_the_last() -> None:
    entry = TrackedJob(_record())
    records = [entry.job]
    got: list[Job] = []

    def publish(job: Job) -> None:  # as the engine publishes a change of state
        with entry.notifier:
            entry.job = job
            entry.version += 1
            entry.notifier.notify_all()

    async def watch() -> None:
        async for job in JobWatcher(entry):
            got.append(job)
            if len(got) == 1:
                # The next record comes from another thread while this one waits for it.
                final = attrs.evolve(_record(JobState.ENDED), facts={"n": 1})
                records.append(final)
                threading.Timer(0.05, publish, args=(final,)).start()

    asyncio.run(asyncio.wait_for(watch(), RPC_TIMEOUT))
    assert got == records
    assert [job.state for job in got] == [JobState.RUNNING, JobState.ENDED]


def test_submit_and_wait_and_watch_answer_over_grpc(harness: Harness) -> None:
    stub = harness.stub("alice")
    request = pb.SubmitRequest(spec=shell("exit 3"), wait_seconds=RPC_TIMEOUT)
    job = stub.Submit(request, timeout=RPC_TIMEOUT).job
    assert (job.state, job.exit_code) == (pb.JOB_STATE_ENDED, 3)
    records = list(stub.Watch(pb.WatchRequest(job_id=job.id), timeout=RPC_TIMEOUT))
    assert [r.state for r in records] == [pb.JOB_STATE_ENDED]
    assert records[0].exit_code == 3
