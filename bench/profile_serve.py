"""``worker serve`` under cProfile, every Python thread of it, stats written when it exits.

    .venv/bin/python bench/profile_serve.py OUT.prof serve --listen 127.0.0.1:0 ...

Everything after ``OUT.prof`` is ``worker``'s own command line. Time is each thread's CPU
time (``time.thread_time``), so a thread blocked on a lock, a queue, a socket or the GIL
costs nothing and the figures add up to the process's CPU; ``PROFILE_CLOCK=wall`` counts
wall-clock time instead (where threads wait). The server stops as it always
does (SIGTERM or SIGINT: every job stopped, then the transports) and, on the way out, the
profiles of the main thread (the event loop) and of every thread started through
``threading`` (the engine's pools, the output pump, the launcher's reader, the timers) are
added into one ``pstats`` file. gRPC core's own threads are not Python threads and are not in
it: their cost shows as the time the event loop spends in ``grpc._cython`` calls.

Read it with ``python -m pstats OUT.prof`` (``sort tottime``, ``stats 40``) or with
:func:`top` below. A bench tool, not part of the package: profiling slows every call
several times over, so figures taken under it are only for finding where time goes.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import threading
import time
from types import FrameType
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_clock = time.perf_counter if os.environ.get("PROFILE_CLOCK") == "wall" else time.thread_time


def _profiler() -> cProfile.Profile:
    profile = cProfile.Profile(_clock)
    with _lock:
        _profiles.append(profile)
    return profile


def _profile_this_thread(frame: FrameType, event: str, arg: Any) -> None:
    # threading.setprofile installs this in each new thread before it runs; its first event
    # swaps it for a profiler of the thread's own (cProfile counts one thread per profiler).
    _profiler().enable()


def write_stats(path: str) -> None:
    """Add every thread's profile into one stats file at ``path``."""
    threading.setprofile(None)  # type: ignore[arg-type]
    with _lock:
        profiles = list(_profiles)
    stats = pstats.Stats()
    for profile in profiles:
        # create_stats disables the profiler of the calling thread only; one still running
        # in another thread finds its stack flushed and records nothing more.
        stats.add(profile)  # type: ignore[arg-type]
    stats.dump_stats(path)


def top(path: str, count: int = 40, sort: str = "tottime") -> str:
    """The ``count`` costliest functions of a stats file, as ``pstats`` prints them."""
    out = io.StringIO()
    pstats.Stats(path, stream=out).sort_stats(sort).print_stats(count)
    return out.getvalue()


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: profile_serve.py OUT.prof serve [worker serve's options...]")
    path = sys.argv[1]
    sys.argv = ["worker", *sys.argv[2:]]
    main_profile = _profiler()
    threading.setprofile(_profile_this_thread)
    # Imported here, not at the top: serve re-executes itself (with this same command line)
    # if grpc was imported before its transport set gRPC core's environment.
    from worker_core.cli import main as worker_main

    main_profile.enable()
    try:
        worker_main()
    finally:
        main_profile.disable()
        write_stats(path)


if __name__ == "__main__":
    main()
