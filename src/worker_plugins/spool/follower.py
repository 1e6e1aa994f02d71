"""A follower of one job's spooled output: a position in its records and in each stream.

The follower reads the files with ``os.pread`` (page cache, not the heap), in batches of at
most ``read_chunk_bytes``, at its own pace; the log holds nothing for it, and the writer never
waits for it. Under the log's notifier it only copies a :class:`~.joblog.Snapshot` (a few
records); the reads happen after the notifier is released.

- Order within a stream is exact; across streams it is the order of the records, the order
  the engine handed the chunks over, live or replayed.
- A lost range (its record says so) is jumped: the next chunk of that stream starts past it,
  so the gap shows in the offsets, as with the memory store.
- :meth:`SpoolFollower.aread` never waits for the disk on the event loop: it reads on the
  loop only what the page cache holds (``preadv`` with ``RWF_NOWAIT`` probes the first and
  last byte of each piece: recent output, the usual case, costs no thread hop), and hands
  the rest of the read to the loop's default executor.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator

from worker_core.plugin import Chunk, StartAt, StartPosition, Stream

from . import index
from .index import FILE_OF, INDEX_FILE, READ_BATCH, RECORD_SIZE, STREAMS, Record
from .joblog import ENDED, JobLog, Snapshot
from .layout import open_for_reading


class WouldBlock(Exception):
    """A read on the event loop would have waited for the disk."""


def _cached(fd: int, offset: int, size: int) -> bool:
    """Whether the first and last byte of ``[offset, offset + size)`` are in the page cache
    (or past the end of the file). Raises OSError if the file system cannot tell."""
    probe = bytearray(1)
    for at in (offset, offset + size - 1) if size > 1 else (offset,):
        try:
            os.preadv(fd, [probe], at, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
    return True


class _ReadFiles:
    """A follower's read-only descriptors of a job's files, opened on first use.

    :meth:`close` may come from another thread while a read is in flight (an ``aread``
    cancelled while its executor thread reads): the descriptors are closed by whichever of
    the two finishes last, so a read never uses a descriptor number already reused.
    """

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False
        self.nowait_unsupported = False

    def pread(self, name: str, size: int, offset: int, nowait: bool = False) -> bytes:
        """Up to ``size`` bytes at ``offset``; b"" if the file is missing, unreadable or closed.

        With ``nowait``, raises :class:`WouldBlock` rather than wait for the disk.
        """
        with self._lock:
            if self._closed:
                return b""
            fd = self._fds.get(name)
            if fd is None:
                # Not cached when missing: a file is made with its first byte, maybe later.
                fd = open_for_reading(self._directory, name)
                if fd is None:
                    return b""
                self._fds[name] = fd
            self._busy += 1
        try:
            if nowait and not self._cached(fd, offset, size):
                raise WouldBlock
            return os.pread(fd, size, offset)
        except OSError:
            return b""  # an I/O error: the follower skips what it cannot read
        finally:
            with self._lock:
                self._busy -= 1
                if self._closed and not self._busy:
                    self._close_all()

    def _cached(self, fd: int, offset: int, size: int) -> bool:
        if self.nowait_unsupported:
            return False
        try:
            return _cached(fd, offset, size)
        except OSError:
            self.nowait_unsupported = True  # this file system cannot tell: the executor reads
            return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if not self._busy:
                self._close_all()

    def _close_all(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


class _Cursor:
    """Where a follower is: the first record not done with, and each stream's next offset."""

    __slots__ = ("positions", "record")

    def __init__(self, record: int, positions: dict[Stream, int]) -> None:
        self.record = record
        self.positions = positions

    def copy(self) -> _Cursor:
        return _Cursor(self.record, dict(self.positions))


class SpoolFollower:
    """A reader of one job's spooled output. Not shared between threads."""

    def __init__(
        self, log: JobLog, streams: frozenset[Stream], start: StartPosition, read_bytes: int
    ) -> None:
        self._log = log
        self._job_id = log.job_id
        self._streams = streams
        self._read_bytes = read_bytes
        self._files = _ReadFiles(log.directory)
        # An abandoned follower must not keep descriptors until the process ends.
        weakref.finalize(self, self._files.close)
        self._detached = False
        self._seen = -1  # the log version this follower has read everything of
        self._behind = False  # the last read stopped at its byte budget
        self._batch: tuple[int, list[Record]] = (0, [])  # records read from the index file
        with log.notifier:
            if start is StartAt.END:
                # On the growing last record, if any: what it gains is new.
                record = log.total - (1 if log.current is not None else 0)
                self._cursor = _Cursor(record, dict(log.sizes))
            else:
                positions = {s: 0 for s in STREAMS}
                if start is not StartAt.BEGINNING:
                    positions.update(start)
                self._cursor = _Cursor(0, positions)

    # the scan: records to chunks, outside the notifier --------------------------------------

    def _record(self, number: int, snap: Snapshot, nowait: bool) -> Record | None:
        if number >= snap.on_disk:
            return snap.tail[number - snap.tail_start]
        first, records = self._batch
        if not first <= number < first + len(records):
            count = min(READ_BATCH, snap.on_disk - number)
            raw = self._files.pread(INDEX_FILE, count * RECORD_SIZE, index.position(number), nowait)
            records = index.decode(raw)
            if not records:
                return None  # the index was removed or damaged under us
            first = number
            self._batch = (first, records)
        return records[number - first]

    def _scan(
        self, cursor: _Cursor, snap: Snapshot, nowait: bool = False
    ) -> tuple[list[Chunk], bool, bool]:
        """Read what ``snap`` holds past ``cursor`` (advancing it), up to the byte budget: the
        chunks, whether the budget stopped the read, and whether (``nowait``) a piece not in
        the page cache did."""
        out: list[Chunk] = []
        budget = self._read_bytes
        positions = cursor.positions
        try:
            while cursor.record < snap.total and budget > 0:
                record = self._record(cursor.record, snap, nowait)
                if record is None:
                    cursor.record = snap.on_disk  # what the index held cannot be read
                    continue
                stream = record.stream
                if stream in self._streams and positions[stream] < record.end:
                    if record.lost:
                        positions[stream] = record.end  # a gap: the next chunk starts past it
                    else:
                        begin = max(positions[stream], record.offset)
                        size = min(record.end - begin, budget)
                        data = self._files.pread(FILE_OF[stream], size, begin, nowait)
                        if data:
                            out.append(Chunk(self._job_id, stream, begin, data))
                            budget -= len(data)
                            positions[stream] = begin + len(data)
                        else:
                            positions[stream] = record.end  # the file is shorter than its index
                        continue
                # Done with this record; the growing last one is kept, to read what it gains.
                if cursor.record == snap.total - 1 and snap.last_open:
                    break
                cursor.record += 1
        except WouldBlock:
            return out, False, True
        return out, budget <= 0, False

    # waiting ---------------------------------------------------------------------------------

    def _take(self) -> Snapshot | None:
        """A snapshot if there may be something new; None to wait. Call with the notifier held."""
        if self._detached:
            return ENDED
        log = self._log
        if self._behind or log.version != self._seen or log.discarded:
            return log.snapshot(self._cursor.record)
        return None

    def _after(self, cursor: _Cursor, snap: Snapshot, chunks: list[Chunk], behind: bool) -> bool:
        """Keep the new position; True if the follower reached the end."""
        self._cursor = cursor
        self._seen = snap.version
        self._behind = behind
        if snap.closed and cursor.record >= snap.total:
            # Everything was read: the end now, or at the next read if this one has chunks.
            if not chunks:
                self._end()
                return True
            self._behind = True  # so the next read takes a snapshot instead of waiting
        return False

    def _end(self) -> None:
        self._detached = True
        self._files.close()

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def read(self, timeout: float | None = None) -> list[Chunk] | None:
        """Next available chunks; ``[]`` if ``timeout`` passed with nothing new; ``None`` at the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = self._log.notifier.wait_for(self._take, self._remaining(deadline))
            if snap is None:
                return []
            if snap.ended:
                self._end()
                return None
            cursor = self._cursor.copy()
            chunks, behind, _ = self._scan(cursor, snap)
            if self._after(cursor, snap, chunks, behind):
                return None
            if chunks:
                return chunks
            if deadline is not None and time.monotonic() >= deadline:
                return []

    async def aread(self, timeout: float | None = None) -> list[Chunk] | None:
        """:meth:`read` for asyncio code; never blocks the event loop on the disk."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = await self._log.notifier.await_for(self._take, self._remaining(deadline))
            if snap is None:
                return []
            if snap.ended:
                self._end()
                return None
            cursor = self._cursor.copy()
            chunks, behind, blocked = self._scan(cursor, snap, nowait=True)
            if blocked and not chunks:
                # Cancelled here, the thread's result is dropped with its copy of the cursor:
                # the next read starts where this one did, and nothing is skipped.
                loop = asyncio.get_running_loop()
                chunks, behind, _ = await loop.run_in_executor(None, self._scan, cursor, snap)
            elif blocked:
                behind = True  # hand out what was cached; the next read goes on from there
            if self._detached:
                return None
            if self._after(cursor, snap, chunks, behind):
                return None
            if chunks:
                return chunks
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def close(self) -> None:
        """Detach; a blocked :meth:`read` or :meth:`aread` returns ``None``."""
        with self._log.notifier:
            self._detached = True
            self._log.notifier.notify_all()
        self._files.close()

    def __iter__(self) -> Iterator[Chunk]:
        while (chunks := self.read()) is not None:
            yield from chunks

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        while (chunks := await self.aread()) is not None:
            for chunk in chunks:
                yield chunk
