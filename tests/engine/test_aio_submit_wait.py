"""``engine.aio.submit(..., wait=seconds)``: one call that answers with the ended job, or with
its record once the wait has passed; and the notifier's conditional coroutine waiters it is
built on. Every wait here has a bound; nothing measures time."""

from __future__ import annotations

import asyncio

import pytest
from helpers import running_engine

from worker_core import EndReason, InvalidSpec, JobSpec, JobState
from worker_core._notify import Notifier, wait_future


def test_a_submit_that_waits_answers_with_the_ended_job() -> None:
    with running_engine() as engine:

        async def main() -> None:
            job = await engine.aio.submit(JobSpec("/bin/sh", args=["-c", "exit 3"]), wait=30)
            assert job.state is JobState.ENDED and job.exit_code == 3
            assert job.end_reason is EndReason.EXITED

        asyncio.run(main())


def test_a_job_that_outlasts_the_wait_is_answered_with_its_running_record() -> None:
    with running_engine() as engine:

        async def main() -> str:
            job = await engine.aio.submit(JobSpec("/bin/sleep", args=["30"]), wait=0.2)
            assert job.state is JobState.RUNNING and job.pid is not None
            return job.id

        job_id = asyncio.run(main())
        assert engine.stop(job_id, grace=0).is_finished


def test_a_submit_that_waits_raises_what_the_submit_raises() -> None:
    with running_engine() as engine:

        async def main() -> None:
            with pytest.raises(InvalidSpec, match="cwd"):
                await engine.aio.submit(JobSpec("/bin/true", cwd="/no/such/directory"), wait=30)

        asyncio.run(main())
        assert engine.list() == []  # nothing half-registered


def test_a_conditional_waiter_wakes_only_once_its_condition_holds() -> None:
    notifier = Notifier()
    state = {"done": False}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with notifier:
            notifier.add_waiter(loop, woken, until=lambda: state["done"])
        for _ in range(3):  # notified while it does not hold: stays asleep
            with notifier:
                notifier.notify_all()
            await asyncio.sleep(0)
            assert not woken.done()
        with notifier:
            state["done"] = True
            notifier.notify_all()
        await asyncio.wait_for(woken, 10)

    asyncio.run(main())


def test_a_condition_that_raises_wakes_the_waiter_to_look_for_itself() -> None:
    notifier = Notifier()

    def broken() -> bool:
        raise RuntimeError("broken condition")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with notifier:
            notifier.add_waiter(loop, woken, until=broken)
            notifier.notify_all()
        await asyncio.wait_for(woken, 10)

    asyncio.run(main())


def test_wait_future_tells_a_timeout_from_a_completion_and_passes_a_cancellation_on() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        never: asyncio.Future[None] = loop.create_future()
        assert await wait_future(never, 0.05) is False
        soon: asyncio.Future[None] = loop.create_future()
        loop.call_soon(soon.set_result, None)
        assert await wait_future(soon, 30) is True
        waiting = asyncio.ensure_future(wait_future(loop.create_future(), 30))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
