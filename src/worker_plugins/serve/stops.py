"""Stop signals that arrive while ``worker serve`` starts: noted at once, acted on between steps.

Python's own handling raises an exception in whatever code runs when the signal comes:
half way through building the event loop, inside gRPC's start, in a finalizer (where it is
dropped: the stop is lost). Interrupting serve at every step of its start-up found each of
those: tracebacks, coroutines never awaited, gRPC's "invalid state", a server that went on
serving. So from the moment serve begins until its event loop takes SIGINT and SIGTERM over,
they are only noted; serve looks between its steps, each bounded (a launcher's start, a
store's opening), and unwinds from there as an interrupted command does: 130 for SIGINT,
128 + 15 for SIGTERM. Once the loop has them, either one is the server's stop (exit 0).
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(SystemExit):
    """SIGTERM before the event loop takes it over: unwind like Ctrl-C does, so whatever was
    set up (a launcher, locks) is released on the way out. Status 128 + 15, as if killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)


class StopRequests:
    """The first stop signal that came since :meth:`note_from_now` (None: none came)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def note_from_now(self) -> None:
        """SIGINT and SIGTERM are noted, not raised, until the event loop installs its own."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        """Unwind (KeyboardInterrupt, :class:`Terminated`) if a stop signal came."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is not None:
            raise Terminated(self.signum)
