"""The engine's operations as coroutines, for asyncio code (a ``grpc.aio`` transport)."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ._model import Job, JobSpec, JobState, Principal

if TYPE_CHECKING:
    from ._engine import Engine


class AsyncEngine:
    """The engine's operations as coroutines; never blocks the event loop.

    Calls that talk to the launcher run on a private thread pool; waiting is native asyncio.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="worker-aio")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def submit(self, spec: JobSpec, principal: Principal | None = None) -> Job:
        job: Job = await self._run(self._engine.submit, spec, principal)
        return job

    async def get(self, job_id: str, principal: Principal | None = None) -> Job:
        return self._engine.get(job_id, principal)

    async def list(
        self,
        principal: Principal | None = None,
        states: Collection[JobState] | None = None,
        owner: str | None = None,
    ) -> builtins.list[Job]:
        return self._engine.list(principal, states, owner)

    async def wait(
        self, job_id: str, timeout: float | None = None, principal: Principal | None = None
    ) -> Job:
        entry = self._engine._readable(job_id, principal)
        await entry.notifier.await_for(lambda: entry.job.is_finished or None, timeout)
        return entry.job

    async def stop(
        self,
        job_id: str,
        principal: Principal | None = None,
        grace: float | None = None,
        force: bool = False,
        timeout: float | None = None,
    ) -> Job:
        entry, grace = await self._run(self._engine._begin_stop, job_id, principal, grace, force)
        if timeout is None:
            timeout = self._engine._stop_wait(grace)
        return await self.wait(entry.job.id, timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
