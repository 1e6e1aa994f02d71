"""One thread running delayed calls (stop escalation, run-time limits, output linger).

A thread per timer would cost a thread per running job with a time limit; a heap served by
one thread costs one thread in all. Callbacks must be short: they run one after another.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("worker.scheduler")


class Timer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerQueue:
    def __init__(self, name: str = "worker-scheduler") -> None:
        self._heap: list[tuple[float, int, Timer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer()
        with self._cond:
            entry = (time.monotonic() + max(delay, 0.0), next(self._seq), timer, callback)
            heapq.heappush(self._heap, entry)
            # The thread sleeps until the earliest deadline: it needs waking only when this
            # one is now the earliest. Most timers (a job's output linger, its time limit)
            # are armed behind others and cancelled before they are due; waking the thread
            # at each arming cost it a context switch per job, and the caller a futex wake.
            if self._heap[0] is entry:
                self._cond.notify()
        return timer

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                _, _, timer, callback = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            try:
                callback()
            except Exception:
                log.exception("scheduled callback failed")
