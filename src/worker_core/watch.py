"""Following a job's record: every new snapshot until it has ENDED, sync or async."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

from .entry import JobEntry
from .model import Job


class JobWatcher:
    """Successive records of one job; ends after the ENDED record."""

    def __init__(self, entry: JobEntry) -> None:
        self._entry = entry
        self._seen = -1
        self._done = False

    def _take(self) -> Job | None:
        if self._entry.version != self._seen:
            self._seen = self._entry.version
            return self._entry.job
        return None

    def next(self, timeout: float | None = None) -> Job | None:
        """The next new record, or None at the end or after ``timeout``."""
        if self._done:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._entry.notifier:
            while True:
                job = self._take()
                if job is not None:
                    self._done = job.is_finished
                    return job
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._entry.notifier.wait(remaining)

    def __iter__(self) -> Iterator[Job]:
        while (job := self.next()) is not None:
            yield job

    async def __aiter__(self) -> AsyncIterator[Job]:
        while not self._done:
            with self._entry.notifier:
                job = self._take()
                waiter = None if job is not None else self._entry.notifier.async_waiter()
            if job is not None:
                self._done = job.is_finished
                yield job
            elif waiter is not None:
                await waiter
