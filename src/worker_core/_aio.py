"""The engine's operations as coroutines, for asyncio code (a ``grpc.aio`` transport)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from ._jobstore import JobQuery
from ._model import Job, JobSpec, JobState, Principal
from ._notify import wait_future, wake_future

if TYPE_CHECKING:
    from ._engine import Engine, JobPage
    from ._tracked import TrackedJob


class EngineInternals(Protocol):
    """The engine's internal interface this facade relies on, beyond its public methods.

    Waiting is native asyncio here, so the facade needs the job's live entry (its notifier)
    rather than a blocking call; everything else goes through public methods.
    """

    def _readable_entry(self, job_id: str, principal: Principal | None) -> TrackedJob:
        """The job's live entry (a finished stand-in once it ended), checked for READ."""
        ...

    def _begin_stop(
        self, job_id: str, principal: Principal | None, grace: float | None, force: bool
    ) -> tuple[TrackedJob, float]:
        """Authorize and start stopping a job; its entry and the grace in force."""
        ...

    def _stop_wait(self, grace: float) -> float:
        """How long a stop waits for the end by default."""
        ...

    def _live_entry(self, job_id: str) -> TrackedJob | None:
        """The job's live entry; None once it has ended."""
        ...


class AsyncEngine:
    """The engine's operations as coroutines; never blocks the event loop.

    Calls that talk to the launcher or the job store run on a private thread pool; waiting is
    native asyncio.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._internals: EngineInternals = engine
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="worker-aio")
            return self._pool

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), lambda: fn(*args, **kwargs))

    async def submit(
        self,
        spec: JobSpec,
        principal: Principal | None = None,
        idempotency_key: str | None = None,
        wait: float = 0.0,
    ) -> Job:
        """:meth:`Engine.submit`; with ``wait`` seconds, the record once the job has ended, or
        its record then once ``wait`` has passed. The submitter learns how its own job ended
        whatever it may read: no READ permission is asked for.
        """
        if wait <= 0:
            job: Job = await self._run(self._engine.submit, spec, principal, idempotency_key)
            return job
        return await self._submit_and_wait(spec, principal, idempotency_key, wait)

    async def _submit_and_wait(
        self, spec: JobSpec, principal: Principal | None, key: str | None, wait: float
    ) -> Job:
        # The pool thread that submits also registers the wait for the end, so the loop wakes
        # once, when the job has ended, rather than once for the submit and again at the end
        # (a wake of the loop from another thread is much of what a short job's call costs).
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        # What the submit gave: the live entry, the record (ended already), or the error;
        # filled before ``woken`` is woken.
        outcome: list[TrackedJob | Job | BaseException] = []

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(wake_future, woken)

        def submit_then_watch() -> None:
            try:
                job = self._engine.submit(spec, principal, key)
            except BaseException as exc:
                outcome.append(exc)
                wake()
                return
            entry = self._internals._live_entry(job.id)
            if entry is None or job.is_finished:
                outcome.append(job)
                wake()
                return
            with entry.notifier:
                outcome.append(entry)
                if not _wake_at_end(entry, loop, woken):
                    wake()

        running = self._executor().submit(submit_then_watch)
        if not await wait_future(woken, wait):
            woken.cancel()
            if not outcome:  # not even submitted within ``wait``: its outcome once it is
                await asyncio.wrap_future(running)
        found = outcome[0]
        if isinstance(found, BaseException):
            raise found
        return found if isinstance(found, Job) else found.job

    async def get(self, job_id: str, principal: Principal | None = None) -> Job:
        return self._engine.get(job_id, principal)

    async def resolve_id(self, job_id: str, principal: Principal | None = None) -> str:
        resolved: str = await self._run(self._engine.resolve_id, job_id, principal)
        return resolved

    async def list(
        self,
        principal: Principal | None = None,
        states: Collection[JobState] | None = None,
        owner: str | None = None,
    ) -> builtins.list[Job]:
        jobs: builtins.list[Job] = await self._run(self._engine.list, principal, states, owner)
        return jobs

    async def list_page(
        self,
        query: JobQuery | None = None,
        principal: Principal | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> JobPage:
        page: JobPage = await self._run(
            self._engine.list_page, query, principal, page_size, page_token
        )
        return page

    async def purge(
        self, job_ids: Sequence[str], principal: Principal | None = None
    ) -> builtins.list[str]:
        removed: builtins.list[str] = await self._run(self._engine.purge, job_ids, principal)
        return removed

    async def purge_matching(
        self, query: JobQuery, principal: Principal | None = None
    ) -> builtins.list[str]:
        removed: builtins.list[str] = await self._run(self._engine.purge_matching, query, principal)
        return removed

    async def signal(self, job_id: str, signum: int, principal: Principal | None = None) -> Job:
        job: Job = await self._run(self._engine.signal, job_id, signum, principal)
        return job

    async def pause(self, job_id: str, principal: Principal | None = None) -> Job:
        job: Job = await self._run(self._engine.pause, job_id, principal)
        return job

    async def resume(self, job_id: str, principal: Principal | None = None) -> Job:
        job: Job = await self._run(self._engine.resume, job_id, principal)
        return job

    async def release(self, job_id: str, principal: Principal | None = None) -> Job:
        job: Job = await self._run(self._engine.release, job_id, principal)
        return job

    async def usage(
        self, job_id: str, principal: Principal | None = None
    ) -> dict[str, int | float]:
        usage: dict[str, int | float] = await self._run(self._engine.usage, job_id, principal)
        return usage

    async def wait(
        self, job_id: str, timeout: float | None = None, principal: Principal | None = None
    ) -> Job:
        entry = self._internals._readable_entry(job_id, principal)
        await _until_finished(entry, timeout)
        return entry.job

    async def stop(
        self,
        job_id: str,
        principal: Principal | None = None,
        grace: float | None = None,
        force: bool = False,
        timeout: float | None = None,
    ) -> Job:
        begun: tuple[TrackedJob, float] = await self._run(
            self._internals._begin_stop, job_id, principal, grace, force
        )
        entry, grace = begun
        if timeout is None:
            timeout = self._internals._stop_wait(grace)
        await _until_finished(entry, timeout)
        return entry.job

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


async def _until_finished(entry: TrackedJob, timeout: float | None) -> None:
    """Wait until the entry's job has ended, or ``timeout``.

    A job that has ended never changes again, so that is read first without the notifier:
    an engine thread holds it while it commits a change of state to the job store, and
    taking it here would stall the event loop (every call it serves) for that long.
    """
    if entry.job.is_finished:  # one attribute read: atomic
        return
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    with entry.notifier:
        if not _wake_at_end(entry, loop, woken):
            return
    await wait_future(woken, timeout)


def _wake_at_end(
    entry: TrackedJob, loop: asyncio.AbstractEventLoop, woken: asyncio.Future[None]
) -> bool:
    """Have ``woken`` completed, through ``loop``, once the entry's job has ended (not at
    each change of state before it); False, and nothing registered, if it has already.
    Call with the entry's notifier held, from any thread."""
    if entry.job.is_finished:
        return False
    entry.notifier.add_waiter(loop, woken, until=lambda: entry.job.is_finished)
    return True
