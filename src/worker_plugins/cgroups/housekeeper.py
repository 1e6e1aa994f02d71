"""The plugin's housekeeping thread: the slow cgroup work, off every job's path.

Two kinds of work, both of which a job's start or end used to wait for:

- removing an ended job's cgroups. ``rmdir`` of a v1 cgroup often fails with EBUSY for a
  moment after its last task exited; here a busy cgroup is tried again later (2 ms, then
  longer), while other work goes on, until ``retry_for`` seconds have passed. What is still
  not removed then is left to the plugin's shutdown, which tries again, and to the next
  start's clean-up after that.
- refilling the pool of ready cgroups (:mod:`.pool`) after a job took one.

One daemon thread, started when there is work and ending after a minute with none, so an
idle plugin (or one a test never shut down) holds no thread. :meth:`Housekeeper.close`
stops it within a bound, after a last round of removals; refills stop at once.
"""

from __future__ import annotations

import collections
import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("worker.cgroups")

#: Seconds before the first retry of a busy removal, and the most between two.
FIRST_RETRY, MAX_RETRY = 0.002, 0.1
#: Seconds without work after which the thread ends (the next piece of work starts another).
IDLE_EXIT = 60.0


class Housekeeper:
    """Removes ended jobs' cgroups and refills the pool, on a thread of its own.

    ``remove_once(job_id)`` makes one attempt: True when the job's cgroups are gone (or are
    no longer this thread's business), False while the kernel says busy; an exception is
    logged and ends the attempts (the plugin keeps the job, for shutdown). ``refill()`` tops
    up the pool. ``retry_for()`` is how long a busy removal is retried, read when it starts.
    """

    def __init__(
        self,
        remove_once: Callable[[str], bool],
        refill: Callable[[], object],
        retry_for: Callable[[], float],
        *,
        idle_exit: float = IDLE_EXIT,
    ) -> None:
        self._remove_once = remove_once
        self._refill = refill
        self._retry_for = retry_for
        self._idle_exit = idle_exit
        self._cond = threading.Condition()
        # Guarded by _cond:
        self._new: collections.deque[str] = collections.deque()
        self._active: set[str] = set()  # handed to the thread, being tried now
        self._retries: list[tuple[float, str]] = []  # a heap of (when, job id)
        self._refill_wanted = False
        self._closing = False
        self._close_by = 0.0
        self._thread: threading.Thread | None = None
        # The housekeeping thread's alone:
        self._give_up_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}

    # ------------------------------------------------------------------ callers' side

    def remove(self, job_id: str) -> bool:
        """Queue the removal of ``job_id``'s cgroups; False if closing (remove it yourself)."""
        with self._cond:
            if self._closing:
                return False
            self._new.append(job_id)
            self._wake()
        return True

    def refill(self) -> None:
        """Ask for the pool to be topped up (requests coalesce); nothing once closing."""
        with self._cond:
            if self._closing or self._refill_wanted:
                return
            self._refill_wanted = True
            self._wake()

    def pending(self) -> list[str]:
        """Jobs whose removal is queued or waiting for a retry (for diagnostics and tests)."""
        with self._cond:
            retrying = (job_id for _, job_id in sorted(self._retries))
            return [*self._new, *sorted(self._active), *retrying]

    def close(self, timeout: float) -> None:
        """Refill no more; go on removing what is queued for at most ``timeout`` seconds,
        then stop. Returns when the thread has ended (or, if it is stuck in a kernel call,
        after the bound); what it did not remove, the caller does."""
        with self._cond:
            self._closing = True
            self._close_by = time.monotonic() + timeout
            self._refill_wanted = False
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout + 1.0)

    def _wake(self) -> None:
        # Called with _cond held.
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="worker-cgroups-housekeeper", daemon=True
            )
            self._thread.start()
        self._cond.notify()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            refill, removals = work
            if refill:
                try:
                    self._refill()
                except Exception:
                    log.exception("cannot refill the pool of ready cgroups")
            for job_id in removals:
                self._attempt(job_id)

    def _next(self) -> tuple[bool, list[str]] | None:
        """Wait for work: (refill?, job ids to try now); None when the thread must end."""
        with self._cond:
            while True:
                now = time.monotonic()
                removals = list(self._new)
                self._new.clear()
                while self._retries and self._retries[0][0] <= now:
                    removals.append(heapq.heappop(self._retries)[1])
                refill, self._refill_wanted = self._refill_wanted, False
                if removals or refill:
                    self._active.update(removals)
                    return refill, removals
                if self._closing and (not self._retries or now >= self._close_by):
                    for _, job_id in self._retries:
                        log.debug("job %s: removal left to shutdown", job_id)
                    self._retries.clear()
                    self._give_up_at.clear()
                    self._delay.clear()
                    self._thread = None
                    return None
                wait = self._retries[0][0] - now if self._retries else self._idle_exit
                if self._closing:
                    wait = min(wait, self._close_by - now)
                if not self._cond.wait(wait) and not (
                    self._retries or self._new or self._refill_wanted or self._closing
                ):
                    self._thread = None  # idle: the next piece of work starts a new one
                    return None

    def _attempt(self, job_id: str) -> None:
        now = time.monotonic()
        give_up_at = self._give_up_at.setdefault(job_id, now + self._retry_for())
        try:
            done = self._remove_once(job_id)
        except Exception:
            log.exception("job %s: cannot remove its cgroup (tried again at shutdown)", job_id)
            done = True  # nothing more for this thread to do
        if not done and now >= give_up_at:
            log.warning(
                "job %s: its cgroup is still busy after %.3g s; removal is tried again at shutdown",
                job_id,
                self._retry_for(),
            )
            done = True
        retry_at = None
        if done:
            self._give_up_at.pop(job_id, None)
            self._delay.pop(job_id, None)
        else:
            delay = self._delay.get(job_id, FIRST_RETRY)
            self._delay[job_id] = min(delay * 2, MAX_RETRY)
            retry_at = now + delay
        with self._cond:
            self._active.discard(job_id)
            if retry_at is not None:
                heapq.heappush(self._retries, (retry_at, job_id))
