"""Waking waiters in threads and in asyncio event loops from any thread.

A :class:`Notifier` is a condition variable that also wakes coroutines: ``notify_all`` sets
every registered asyncio future through its own loop's ``call_soon_threadsafe``, so a
producer thread never blocks on, or runs code in, a consumer's event loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    # Imported where a coroutine waits: a program that never awaits (``worker run``) does
    # not pay for asyncio.
    import asyncio

T = TypeVar("T")


def wake_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: A registered coroutine waiter: its loop, its future, and what must hold for it to wake
#: (None: any notification).
_Waiter = tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]", "Callable[[], bool] | None"]


class Notifier:
    """Hold it (``with notifier:``) to read or change the state it guards."""

    __slots__ = ("_cond", "_futures", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Made at the first wait: most notifiers (a queued job's, a quiet log's) are only
        # ever locked, and a Condition costs about 2 KiB.
        self._cond: threading.Condition | None = None
        self._futures: list[_Waiter] = []

    def _condition(self) -> threading.Condition:
        """The condition over the lock. Call with the notifier held."""
        if self._cond is None:
            self._cond = threading.Condition(self._lock)
        return self._cond

    def __enter__(self) -> Notifier:
        self._lock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    def notify_all(self) -> None:
        """Wake every waiter. Call with the notifier held."""
        if self._cond is not None:
            self._cond.notify_all()
        if self._futures:
            futures, self._futures = self._futures, []
            for waiter in futures:
                loop, future, until = waiter
                if until is not None and not future.done() and not _holds(until):
                    # Not what it waits for: waking its loop (a self-pipe write, an epoll
                    # round) would only have it look and wait again.
                    self._futures.append(waiter)
                    continue
                # The loop may have been closed by a caller that gave up; nothing to wake then.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(wake_future, future)

    def wait(self, timeout: float | None) -> bool:
        """Block until notified or ``timeout``. Call with the notifier held."""
        return self._condition().wait(timeout)

    def wait_for(self, take: Callable[[], T | None], timeout: float | None) -> T | None:
        """Call ``take`` (with the notifier held) until it returns something other than None,
        and return that; None once ``timeout`` has passed. Takes the notifier itself."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self:
            while (value := take()) is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._condition().wait(remaining)
            return value

    async def await_for(self, take: Callable[[], T | None], timeout: float | None) -> T | None:
        """:meth:`wait_for` for a coroutine: the event loop runs on while it waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self:
                value = take()
                if value is not None:
                    return value
                waiter = self.async_waiter()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            await wait_future(waiter, remaining)

    def async_waiter(self) -> asyncio.Future[None]:
        """A future that completes at the next :meth:`notify_all`. Call with the notifier held,
        from a coroutine; await it after releasing."""
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.add_waiter(loop, future)
        return future

    def add_waiter(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Complete ``future`` (through ``loop``) at the first :meth:`notify_all` after which
        ``until()`` holds, or the next one without ``until``. Call with the notifier held,
        from any thread. ``until`` runs with the notifier held, in the notifying thread: it
        must only read (a waiter that takes something out of what the notifier guards
        takes it on its own loop, after waking)."""
        if len(self._futures) >= 64:
            # Waiters that gave up (a cancelled stream on a quiet job) would otherwise stay
            # here until the next notification.
            self._futures = [w for w in self._futures if not w[1].done()]
        self._futures.append((loop, future, until))


def _holds(until: Callable[[], bool]) -> bool:
    try:
        return until()
    except Exception:  # the waiter looks again on its own loop, and sees the error there
        return True


async def wait_future(future: asyncio.Future[None], timeout: float | None) -> bool:
    """Await ``future`` for at most ``timeout`` seconds; True if it completed.

    One timer on the loop rather than ``asyncio.wait_for`` (which adds a future, a callback
    and a cancellation of its own to each wait): at the deadline the future is cancelled,
    and that alone is taken for a timeout; a cancellation of the waiting task propagates.
    """
    import asyncio

    if timeout is None:
        await future
        return True
    expired = False

    def expire() -> None:
        nonlocal expired
        if not future.done():
            expired = True
            future.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await future
        return True
    except asyncio.CancelledError:
        if expired:
            return False
        raise
    finally:
        timer.cancel()
