"""The engine from asyncio code (never blocking the loop) and from many threads at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import running_engine

from worker_core import EndReason, Engine, Job, JobSpec, JobState, StartAt, Stream


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine() as engine:
        yield engine


class Heartbeat:
    """Ticks every 10 ms; the longest gap between ticks shows whether the loop was blocked."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def test_aio_submit_wait_stop_and_follow_never_block_the_event_loop(engine: Engine) -> None:
    async def main() -> tuple[Job, Job, bytes, Heartbeat]:
        with Heartbeat() as heartbeat:
            short = await engine.aio.submit(JobSpec("/bin/sh", args=["-c", "sleep 0.3; echo done"]))
            follower = engine.follow(short.id)
            chunks = [chunk async for chunk in follower]
            exited = await engine.aio.wait(short.id, timeout=5)

            long = await engine.aio.submit(
                JobSpec("/bin/sh", args=["-c", "trap '' TERM; sleep 30"])
            )
            running = await engine.aio.wait(long.id, timeout=0.3)  # times out: still running
            assert running.state is JobState.RUNNING
            stopped = await engine.aio.stop(long.id, grace=0.3)
            assert [j.id for j in await engine.aio.list()] == [short.id, long.id]
            assert (await engine.aio.get(long.id)) == stopped
        return exited, stopped, b"".join(c.data for c in chunks), heartbeat

    exited, stopped, output, heartbeat = asyncio.run(asyncio.wait_for(main(), 20))
    assert exited.end_reason is EndReason.EXITED and output == b"done\n"
    assert stopped.end_reason is EndReason.STOPPED and stopped.signal == 9
    assert heartbeat.ticks > 40, "about a second of waiting: the heartbeat kept ticking"
    assert heartbeat.longest_gap < 0.2, f"the loop was blocked for {heartbeat.longest_gap:.2f}s"


def test_aread_with_a_timeout_returns_an_empty_batch_without_blocking_the_loop(
    engine: Engine,
) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))

    async def main() -> tuple[object, Heartbeat]:
        with Heartbeat() as heartbeat:
            follower = engine.follow(job.id, start=StartAt.END, streams=[Stream.STDOUT])
            batch = await follower.aread(timeout=0.3)
            follower.close()
            assert await follower.aread(timeout=1) is None, "a closed follower has ended"
        return batch, heartbeat

    try:
        batch, heartbeat = asyncio.run(asyncio.wait_for(main(), 10))
        assert batch == []
        assert heartbeat.ticks > 10 and heartbeat.longest_gap < 0.2
    finally:
        engine.stop(job.id, grace=1)


def test_an_async_watcher_sees_every_state_until_ended(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["0.2"]))

    async def main() -> list[JobState]:
        return [record.state async for record in engine.watch(job.id)]

    states = asyncio.run(asyncio.wait_for(main(), 10))
    assert states[-1] is JobState.ENDED and states[0] in (JobState.RUNNING, JobState.ENDED)


def test_eight_threads_submitting_twenty_jobs_each_all_end_with_their_own_output(
    engine: Engine,
) -> None:
    def submitter(worker: int) -> list[tuple[str, str]]:
        jobs = []
        for n in range(20):
            tag = f"{worker}-{n}"
            job = engine.submit(JobSpec("/bin/echo", args=[tag]))
            jobs.append((job.id, tag))
        return jobs

    with ThreadPoolExecutor(8) as pool:
        submitted = [pair for batch in pool.map(submitter, range(8)) for pair in batch]
    assert len(submitted) == 160 and len({job_id for job_id, _ in submitted}) == 160
    for job_id, tag in submitted:
        ended = engine.wait(job_id, timeout=10)
        assert (ended.end_reason, ended.exit_code) == (EndReason.EXITED, 0)
        assert engine.output(job_id) == f"{tag}\n".encode()
    assert len(engine.list(states=[JobState.ENDED])) == 160
