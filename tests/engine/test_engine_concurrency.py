"""The engine from asyncio code (never blocking the loop) and from many threads at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worker_core import EndReason, Engine, Job, JobSpec, JobState, StartAt, Stream


async def touch_soon(path: Path) -> None:
    """Creates ``path`` once the event loop has given this task its turn twice: never while
    something blocks the loop."""
    await asyncio.sleep(0.05)
    path.touch()


def waiting_for(path: Path, then: str) -> JobSpec:
    """A job that runs ``then`` once ``path`` exists; its time limit ends it otherwise."""
    script = f"while [ ! -e {path} ]; do sleep 0.01; done; {then}"
    return JobSpec("/bin/sh", args=["-c", script], timeout=30)


def test_aio_submit_wait_stop_and_follow_never_block_the_event_loop(
    engine: Engine, tmp_path: Path
) -> None:
    # Each awaited call below can only end well if the loop runs another task meanwhile:
    # the job it waits for goes on only once `touch_soon`, on the same loop, has made its
    # file. A call that blocked the loop would see the job's time limit or the grace end it.
    async def main() -> tuple[Job, bytes, Job, Job]:
        short = await engine.aio.submit(waiting_for(tmp_path / "follow", "echo done"))
        follower = engine.follow(short.id)
        toucher = asyncio.create_task(touch_soon(tmp_path / "follow"))
        chunks = [chunk async for chunk in follower]
        await toucher
        followed = await engine.aio.wait(short.id, timeout=30)

        waited = await engine.aio.submit(waiting_for(tmp_path / "wait", "exit 0"))
        toucher = asyncio.create_task(touch_soon(tmp_path / "wait"))
        exited = await engine.aio.wait(waited.id, timeout=60)
        await toucher

        # Ignores SIGTERM, and ends by itself (exit 3) once its file exists.
        stop = tmp_path / "stop"
        script = f"trap '' TERM; echo up; while [ ! -e {stop} ]; do sleep 0.01; done; exit 3"
        long = await engine.aio.submit(JobSpec("/bin/sh", args=["-c", script]))
        while engine.output(long.id) != b"up\n":  # the trap is in place
            await asyncio.sleep(0.01)
        running = await engine.aio.wait(long.id, timeout=0.3)  # times out: still running
        assert running.state is JobState.RUNNING
        toucher = asyncio.create_task(touch_soon(stop))
        stopped = await engine.aio.stop(long.id, grace=60)
        await toucher
        assert [j.id for j in await engine.aio.list()] == [short.id, waited.id, long.id]
        assert (await engine.aio.get(long.id)) == stopped
        return followed, b"".join(c.data for c in chunks), exited, stopped

    followed, output, exited, stopped = asyncio.run(asyncio.wait_for(main(), 120))
    assert followed.end_reason is EndReason.EXITED and output == b"done\n"
    assert exited.end_reason is EndReason.EXITED and exited.exit_code == 0
    assert stopped.end_reason is EndReason.STOPPED
    assert (stopped.exit_code, stopped.signal) == (3, None), "the grace ran out: loop blocked"


def test_aread_with_a_timeout_returns_an_empty_batch_without_blocking_the_loop(
    engine: Engine,
) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))

    async def main() -> tuple[object, bool]:
        follower = engine.follow(job.id, start=StartAt.END, streams=[Stream.STDOUT])
        # Runs only if the loop gets control while aread waits: a read that blocked the loop
        # would return with this task not even started.
        meanwhile = asyncio.create_task(asyncio.sleep(0.01))
        batch = await follower.aread(timeout=0.3)
        ran_meanwhile = meanwhile.done()
        follower.close()
        assert await follower.aread(timeout=1) is None, "a closed follower has ended"
        return batch, ran_meanwhile

    try:
        batch, ran_meanwhile = asyncio.run(asyncio.wait_for(main(), 30))
        assert batch == []
        assert ran_meanwhile, "aread blocked the event loop"
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
