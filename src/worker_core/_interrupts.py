"""A stop signal that a finalizer swallowed is delivered again.

Python raises the ``KeyboardInterrupt`` of a Ctrl-C (and ``serve``'s ``SystemExit`` for
SIGTERM) in whatever code runs when the signal arrives. If that is a finalizer (a generator
being closed, a ``__del__``, a weakref callback), the exception cannot propagate: Python
prints "Exception ignored in ..." and carries on, and the signal is lost. Seen: ``worker
serve`` interrupted during its start-up went on to serve, and never stopped. The hook
installed here sees such an exception instead, says nothing, and has the signal sent again
a moment later (from a helper thread: raised at once, its handler would run inside the hook,
which is a finalizer's context too): it is then handled in the ordinary code running then.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

#: How long after the swallowed one the signal comes again (seconds).
REDELIVERY_DELAY = 0.01


def signal_of(exc: BaseException | None) -> int | None:
    """The signal whose handler raised ``exc``: SIGINT for a ``KeyboardInterrupt``, the
    ``signum`` a ``SystemExit`` raised by a stop-signal handler carries; None otherwise."""
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    signum = getattr(exc, "signum", None) if isinstance(exc, SystemExit) else None
    return signum if isinstance(signum, int) else None


def redeliver_swallowed_stops() -> None:
    """Install the hook (once per process); other unraisable exceptions go to the hook that
    was there before."""
    previous = sys.unraisablehook
    if getattr(previous, "redelivers_stops", False):
        return

    def hook(unraisable: Any) -> None:
        signum = signal_of(unraisable.exc_value)
        if signum is None:
            previous(unraisable)
            return
        timer = threading.Timer(REDELIVERY_DELAY, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()

    hook.redelivers_stops = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
