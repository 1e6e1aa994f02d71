"""Following a job's record: every new snapshot until it has ENDED, sync or async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from ._model import Job
from ._tracked import TrackedJob


class JobWatcher:
    """Successive records of one job; ends after the ENDED record."""

    def __init__(self, entry: TrackedJob) -> None:
        self._entry = entry
        # The record given last. Each change of state publishes a new Job object, so "not
        # this one" means "a newer one", read with or without the notifier held (one
        # attribute read is atomic): never the same record twice.
        self._last: Job | None = None
        self._done = False

    def _take(self) -> Job | None:
        job = self._entry.job
        if job is not self._last:
            self._last = job
            return job
        return None

    def next(self, timeout: float | None = None) -> Job | None:
        """The next new record, or None at the end or after ``timeout``."""
        if self._done:
            return None
        job = self._entry.notifier.wait_for(self._take, timeout)
        if job is not None:
            self._done = job.is_finished
        return job

    def __iter__(self) -> Iterator[Job]:
        while (job := self.next()) is not None:
            yield job

    async def __aiter__(self) -> AsyncIterator[Job]:
        while not self._done:
            # A newer record is taken without the notifier when there is one: an engine
            # thread holds it while it commits a change to the job store, and waiting for it
            # here would stall the event loop. Only waiting for the next one needs it.
            job = self._take() or await self._entry.notifier.await_for(self._take, None)
            if job is None:  # only after a timeout, and there is none
                return
            self._done = job.is_finished
            yield job
