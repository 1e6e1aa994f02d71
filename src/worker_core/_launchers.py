"""The engine's launchers: several, so that spawns proceed in parallel on every core.

One launcher starts with the engine; more (up to the configured number) start in the
background when a spawn finds every running one busy with another spawn. A job is signalled
through the launcher that started it (only that one may reap it, so only that one knows
whether its PID is still the job's); a launcher's death concerns its own jobs alone.

The engine has two pools: the launchers of every job, and restricted ones (see
``restricted_plan``) for jobs that may hold no capability and gain none, started at the
first such job.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from ._launcher import ExitReport, LauncherClient, LauncherDied

log = logging.getLogger("worker.launcher")

#: The default number of launchers is one per CPU, but no more than this.
MAX_DEFAULT = 8


def default_size(configured: int) -> int:
    """How many launchers an engine may run (``[engine] launchers``; 0 means one per CPU)."""
    if configured > 0:
        return configured
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT))


class LauncherPool:
    """Up to ``size`` launchers, started as spawns need them. Thread-safe."""

    def __init__(
        self,
        size: int,
        on_exit: Callable[[ExitReport], None],
        on_death: Callable[[LauncherClient, str], None],
        timeout: float,
        restricted: bool = False,
    ) -> None:
        self.size = size
        self.restricted = restricted
        self._on_exit = on_exit
        self._on_death = on_death
        self._timeout = timeout
        self._lock = threading.Lock()
        self._clients: list[LauncherClient] = []
        self._growing: threading.Thread | None = None
        self._closed = False
        self._started = False  # one launcher has run: none running now means it died
        self._starting = threading.Lock()  # held by the spawn that starts one when none runs

    @property
    def clients(self) -> list[LauncherClient]:
        """The launchers running now."""
        with self._lock:
            return [c for c in self._clients if c.alive]

    def start(self) -> None:
        """Start the first launcher; raises LauncherDied if it cannot start."""
        client = self._new()
        with self._lock:
            self._clients.append(client)
            self._started = True

    def pick(self) -> LauncherClient:
        """The launcher for the next spawn: the least busy one; a new one if none runs.

        When every launcher is busy and there is room, another starts in the background;
        this spawn does not wait for it.
        """
        best = self._least_busy()
        if best is not None:
            return best
        # None runs: the first is needed (a pool started on demand), or the last one died
        # (its jobs are already LOST). One spawn starts one; others wait for it.
        with self._starting:
            best = self._least_busy()
            if best is not None:
                return best
            if self._started:
                log.warning("starting a new launcher")
            client = self._new()
            with self._lock:
                if self._closed:
                    client.shutdown()
                    raise LauncherDied("the engine is shutting down")
                self._clients.append(client)
                self._started = True
            return client

    def _least_busy(self) -> LauncherClient | None:
        with self._lock:
            if self._closed:
                raise LauncherDied("the engine is shutting down")
            self._clients = [c for c in self._clients if c.alive]
            live = self._clients
            if not live:
                return None
            best = min(live, key=lambda c: c.in_flight)
            if best.in_flight and len(live) < self.size and self._growing is None:
                self._growing = threading.Thread(
                    target=self._grow, name="worker-launcher-start", daemon=True
                )
                self._growing.start()
            return best

    def _new(self) -> LauncherClient:
        return LauncherClient(self._on_exit, self._on_death, self._timeout, self.restricted)

    def _grow(self) -> None:
        try:
            client = self._new()
        except Exception as exc:  # spawns go on with the launchers already running
            log.warning("could not start another launcher: %s", exc)
            with self._lock:
                self._growing = None
            return
        with self._lock:
            self._growing = None
            if not self._closed:
                self._clients.append(client)
                log.debug("launcher %d started (%d running)", client.pid, len(self._clients))
                return
        client.shutdown()

    def shutdown(self) -> None:
        """Ask every launcher to kill its jobs and exit (in parallel: each waits for its own)."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
            growing = self._growing
        if growing is not None:  # it shuts its launcher down itself, seeing us closed
            growing.join(self._timeout + 5.0)
        threads = [
            threading.Thread(target=c.shutdown, name="worker-launcher-stop", daemon=True)
            for c in clients[1:]
        ]
        for thread in threads:
            thread.start()
        if clients:
            clients[0].shutdown()
        for thread in threads:
            thread.join()
