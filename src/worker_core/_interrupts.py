"""A Ctrl-C that a finalizer swallowed is delivered again.

Python raises the ``KeyboardInterrupt`` of a Ctrl-C in whatever code runs when the signal
arrives. If that is a finalizer (a generator being closed, a ``__del__``, a weakref
callback), the exception cannot propagate: Python prints "Exception ignored in ..." and
carries on, and the signal is lost (seen once: ``worker serve``, interrupted during its
start-up, went on to serve; serve now notes its stop signals itself, see its ``stops``
module, and this covers every command, and serve before that). The hook installed here
sees such an exception instead, says nothing, and has SIGINT sent again a moment later
(from a helper thread: raised at once, its handler would run inside the hook, which is a
finalizer's context too): it is then handled in the ordinary code running then.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

#: How long after the swallowed one the signal comes again (seconds).
REDELIVERY_DELAY = 0.01


def redeliver_swallowed_stops() -> None:
    """Install the hook (once per process); other unraisable exceptions go to the hook that
    was there before."""
    previous = sys.unraisablehook
    if getattr(previous, "redelivers_stops", False):
        return

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        timer = threading.Timer(REDELIVERY_DELAY, os.kill, (os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()

    hook.redelivers_stops = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
