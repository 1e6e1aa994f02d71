"""A few fresh job cgroups made ahead of time, so that starting a job renames one.

Making a v1 job cgroup is a mkdir per hierarchy and a ``pids.max`` write; renaming a ready
one is a rename per hierarchy. The pool holds up to ``size`` entries (``pool-<random>``,
see :mod:`.names`), made by the plugin's housekeeping thread, never on a job's path.

Invariants: an entry is handed out at most once (:meth:`CgroupPool.take` removes it from
the pool, and the job's cgroup is removed, never returned, when it ends), so every job
starts in a cgroup nothing ever ran in and its counters start at zero; and once the pool is
closed no entry is left, including one being made at that moment.
"""

from __future__ import annotations

import collections
import logging
import threading

from .backend import Backend
from .fs import CgroupError
from .names import new_pool_name

log = logging.getLogger("worker.cgroups")


class CgroupPool:
    """Up to ``size`` ready cgroups under ``backend``'s parent. Thread-safe."""

    def __init__(self, backend: Backend, size: int) -> None:
        self.backend = backend
        self.size = size
        self._lock = threading.Lock()
        self._ready: collections.deque[str] = collections.deque()
        self._making: set[str] = set()
        self._closed = False
        # Set after a failure is logged, so a host that keeps refusing is not logged on
        # every refill; cleared when an entry is made again.
        self._failing = False

    def take(self) -> str | None:
        """A ready entry, now the caller's alone (to rename for one job); None if empty."""
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def owns(self, name: str) -> bool:
        """Whether ``name`` is one of this pool's entries, ready or being made."""
        with self._lock:
            return name in self._ready or name in self._making

    def ready(self) -> list[str]:
        """The entries ready now, oldest first (for diagnostics and tests)."""
        with self._lock:
            return list(self._ready)

    def fill(self) -> int:
        """Make entries until the pool is full (or closed, or the host refuses); how many."""
        made = 0
        while True:
            with self._lock:
                if self._closed or len(self._ready) + len(self._making) >= self.size:
                    return made
                name = new_pool_name()
                self._making.add(name)
            try:
                self.backend.make_pool_entry(name)
            except CgroupError as exc:
                with self._lock:
                    self._making.discard(name)
                    first, self._failing = not self._failing, True
                    closed = self._closed
                if first and not closed:  # closed meanwhile: its parent is gone, as meant
                    log.warning("cannot make a ready cgroup (jobs make their own): %s", exc)
                return made
            with self._lock:
                self._making.discard(name)
                keep = not self._closed
                if keep:
                    self._ready.append(name)
                    self._failing = False
            if not keep:
                # Closed while it was being made: nobody will take it.
                self.backend.remove_pool_entry(name)
                return made
            made += 1

    def close(self) -> None:
        """Stop filling and remove every ready entry (one being made removes itself)."""
        with self._lock:
            self._closed = True
            names = list(self._ready)
            self._ready.clear()
        for name in names:
            self.backend.remove_pool_entry(name)
