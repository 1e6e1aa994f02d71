"""The engine's operations as coroutines, for asyncio code (a ``grpc.aio`` transport)."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from ._jobstore import JobQuery
from ._model import Job, JobSpec, JobState, Principal

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

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="worker-aio")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def submit(
        self,
        spec: JobSpec,
        principal: Principal | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        job: Job = await self._run(self._engine.submit, spec, principal, idempotency_key)
        return job

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
    if not entry.job.is_finished:  # one attribute read: atomic
        await entry.notifier.await_for(lambda: entry.job.is_finished or None, timeout)
