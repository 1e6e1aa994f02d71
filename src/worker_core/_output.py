"""Output as the engine sees it: chunks, streams, where a follower starts, and the store protocol.

The engine hands every chunk to ``on_output`` hooks; an output store plugin (the built-in
``memory`` broker by default) keeps them and serves followers. A follower is only a position
in a job's log, so a slow one costs nothing to the job or to other followers.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Protocol, runtime_checkable

import attrs


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


BOTH_STREAMS: frozenset[Stream] = frozenset({Stream.STDOUT, Stream.STDERR})


@attrs.frozen
class Chunk:
    """``data`` written by job ``job_id`` to ``stream``, starting at byte ``offset`` of that stream."""

    job_id: str
    stream: Stream
    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


class StartAt(enum.Enum):
    BEGINNING = "beginning"  # replay everything, then follow live
    END = "end"  # live only: what is written after the follower attached


#: Where a follower starts: the beginning, the current end, or per-stream byte offsets
#: (resume after a disconnect: pass the ``end`` of the last chunk received on each stream).
StartPosition = StartAt | Mapping[Stream, int]


@runtime_checkable
class Follower(Protocol):
    """A reader of one job's output. Iterate it (sync or async) to get chunks until the job ends."""

    def read(self, timeout: float | None = None) -> list[Chunk] | None:
        """Next available chunks; ``[]`` if ``timeout`` passed with nothing new; ``None`` at the end."""
        ...

    async def aread(self, timeout: float | None = None) -> list[Chunk] | None:
        """:meth:`read` for asyncio code; never blocks the event loop."""
        ...

    def close(self) -> None:
        """Detach; a blocked :meth:`read` or :meth:`aread` returns ``None``."""
        ...

    def __iter__(self) -> Iterator[Chunk]: ...

    def __aiter__(self) -> AsyncIterator[Chunk]: ...


@runtime_checkable
class OutputStore(Protocol):
    """What the engine needs from the plugin that keeps output (``output_store`` hook).

    The engine calls :meth:`open`, :meth:`append` (on its output thread, in order per
    stream) and :meth:`close` for every job; ``on_output`` observers see each chunk after
    the store kept it. Followers may be created from any thread.
    """

    def open(self, job_id: str) -> None:
        """A job was registered: its log exists from now on (empty for a new job)."""
        ...

    def append(self, chunk: Chunk) -> int:
        """Keep ``chunk``. Return how many bytes of output were lost doing so (0 when all is
        kept): bytes this store could not write (disk full, a quota) or dropped to make room.
        The engine records the total on the job (fact ``output_lost_bytes``). Must not block
        for long and must not raise."""
        ...

    def close(self, job_id: str) -> None:
        """The job has ended and its output was read to the end: followers that have read
        everything end."""
        ...

    def follow(self, job_id: str, streams: frozenset[Stream], start: StartPosition) -> Follower:
        """A follower of ``job_id``'s output, for the given streams, from ``start``."""
        ...

    def size(self, job_id: str) -> Mapping[Stream, int]:
        """Bytes written so far to each stream."""
        ...

    def discard(self, job_id: str) -> None:
        """Forget a job's output (its record was removed)."""
        ...
