"""The in-memory output store (part of the ``memory`` plugin, loaded by default).

An append-only log of chunks per job. A follower is an index into that log plus the streams
it wants, so any number of followers cost the job nothing: appending never waits for a
reader, and a stalled follower simply falls behind. Order within a stream is exact; across
the two streams it is the order the engine read them.

Memory is bounded per job (``[plugins.memory] max_bytes_per_job``, 256 MiB by default): past
it the oldest chunks are dropped. A follower reading live never notices; one that starts
from the beginning, or falls that far behind, continues from the oldest chunk kept, and sees
the gap in the chunks' offsets. A job writing without end must not take the server down.
Memory is bounded in all too (``max_total_bytes``, 2 GiB by default): past it the output of
finished jobs is dropped, the longest-finished first; their records stay.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Mapping

import attrs

from worker_core.plugin import (
    Chunk,
    Notifier,
    StartAt,
    StartPosition,
    Stream,
    release_free_memory_soon,
)

#: The most bytes one read hands a follower: large enough for throughput, small enough that
#: one follower's batch does not hold a big slice of memory twice.
MAX_READ_BYTES = 4 << 20

#: Freed output past which the allocator is asked to give free memory back to the kernel (it
#: keeps freed memory for reuse otherwise: see :mod:`worker_core.plugin.tune_allocator_for_streaming`).
RELEASE_AFTER_BYTES = 64 << 20


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class MemoryOutputConfig:
    #: Bytes of output kept per job; the oldest chunks are dropped past it.
    max_bytes_per_job: int = attrs.field(default=256 << 20, validator=_positive)
    #: Bytes of output kept for all jobs; finished jobs' output is dropped past it, oldest first.
    max_total_bytes: int = attrs.field(default=2 << 30, validator=_positive)


class JobLog:
    """One job's output. Guarded by ``notifier``.

    Chunk ``i`` (an absolute index, counting dropped ones) is ``chunks[i - first]``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.notifier = Notifier()
        self.chunks: deque[Chunk] = deque()
        self.first = 0
        self.kept_bytes = 0
        self.max_bytes = max_bytes
        self.sizes: dict[Stream, int] = {Stream.STDOUT: 0, Stream.STDERR: 0}
        self.closed = False

    @property
    def end(self) -> int:
        return self.first + len(self.chunks)

    def append(self, chunk: Chunk) -> tuple[int, int]:
        """Add a chunk; return the change in bytes kept and the bytes dropped for room."""
        with self.notifier:
            before = self.kept_bytes
            self.chunks.append(chunk)
            self.kept_bytes += len(chunk.data)
            self.sizes[chunk.stream] = chunk.end
            dropped_bytes = 0
            # Keep at least the newest chunk, however large, so live followers lose nothing.
            while self.kept_bytes > self.max_bytes and len(self.chunks) > 1:
                dropped = self.chunks.popleft()
                self.kept_bytes -= len(dropped.data)
                dropped_bytes += len(dropped.data)
                self.first += 1
            self.notifier.notify_all()
            return self.kept_bytes - before, dropped_bytes

    def drop_all(self) -> int:
        """Drop every chunk (the sizes stay); return the bytes freed."""
        with self.notifier:
            freed, self.kept_bytes = self.kept_bytes, 0
            self.first += len(self.chunks)
            self.chunks.clear()
            self.notifier.notify_all()
            return freed

    def close(self) -> None:
        with self.notifier:
            self.closed = True
            self.notifier.notify_all()


class LogFollower:
    """A position in a :class:`JobLog`. Not shared between threads."""

    def __init__(self, log: JobLog, streams: frozenset[Stream], start: StartPosition) -> None:
        self._log = log
        self._streams = streams
        self._detached = False
        with log.notifier:
            if start is StartAt.END:
                self._index = log.end
                self._skip: dict[Stream, int] = {}
            else:
                self._index = 0
                self._skip = {} if start is StartAt.BEGINNING else dict(start)

    def _take(self) -> list[Chunk] | None:
        """Chunks available now ([] if none); None at the end. Call with the log's notifier held."""
        log = self._log
        if self._detached:
            return None
        out: list[Chunk] = []
        budget = MAX_READ_BYTES
        # Fallen behind what is kept: continue from the oldest chunk (the offsets show the gap).
        self._index = max(self._index, log.first)
        while self._index < log.end and budget > 0:
            chunk = log.chunks[self._index - log.first]
            self._index += 1
            if chunk.stream not in self._streams:
                continue
            skip = self._skip.get(chunk.stream, 0)
            if skip:
                if chunk.end <= skip:
                    continue
                if chunk.offset < skip:
                    chunk = Chunk(
                        chunk.job_id, chunk.stream, skip, chunk.data[skip - chunk.offset :]
                    )
                del self._skip[chunk.stream]
            out.append(chunk)
            budget -= len(chunk.data)
        if not out and log.closed and self._index >= log.end:
            return None
        return out

    def _ready(self) -> tuple[list[Chunk] | None] | None:
        """``(chunks,)`` once there is output to hand out or the end (``(None,)``); None while
        there is neither. Call with the log's notifier held."""
        chunks = self._take()
        return (chunks,) if chunks is None or chunks else None

    def read(self, timeout: float | None = None) -> list[Chunk] | None:
        ready = self._log.notifier.wait_for(self._ready, timeout)
        return [] if ready is None else ready[0]

    async def aread(self, timeout: float | None = None) -> list[Chunk] | None:
        ready = await self._log.notifier.await_for(self._ready, timeout)
        return [] if ready is None else ready[0]

    def close(self) -> None:
        with self._log.notifier:
            self._detached = True
            self._log.notifier.notify_all()

    def __iter__(self) -> Iterator[Chunk]:
        while (chunks := self.read()) is not None:
            yield from chunks

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        while (chunks := await self.aread()) is not None:
            for chunk in chunks:
                yield chunk


class MemoryOutputStore:
    """Keeps every job's output in memory and serves followers from it."""

    def __init__(self) -> None:
        self._logs: dict[str, JobLog] = {}
        self._lock = threading.Lock()
        self._total = 0  # bytes kept across all logs
        self._finished: OrderedDict[str, None] = OrderedDict()  # ended jobs, in order of ending
        self._freed = 0  # bytes of output dropped since memory was last released
        self.config = MemoryOutputConfig()

    def _log(self, job_id: str) -> JobLog:
        with self._lock:
            log = self._logs.get(job_id)
            if log is None:
                log = self._logs[job_id] = JobLog(self.config.max_bytes_per_job)
            return log

    def configure(self, config: MemoryOutputConfig) -> None:
        self.config = config

    # OutputStore -------------------------------------------------------------------------

    def open(self, job_id: str) -> None:
        # Nothing yet: a log is made at the first chunk or follower (a queued job may wait
        # long, and thousands of them should cost little).
        pass

    def close(self, job_id: str) -> None:
        self._log(job_id).close()
        with self._lock:
            self._finished[job_id] = None

    def append(self, chunk: Chunk) -> int:
        added, lost = self._log(chunk.job_id).append(chunk)
        with self._lock:
            self._total += added
            # Over the overall budget: the output of the longest-finished jobs goes first.
            while self._total > self.config.max_total_bytes and self._finished:
                old, _ = self._finished.popitem(last=False)
                log = self._logs.get(old)
                if log is not None:
                    self._dropped(log.drop_all())
            release = self._release_due()
        if release:
            release_free_memory_soon()  # trimming takes milliseconds: not here
        return lost

    # OutputStore -------------------------------------------------------------------------

    def follow(self, job_id: str, streams: frozenset[Stream], start: StartPosition) -> LogFollower:
        return LogFollower(self._log(job_id), streams, start)

    def size(self, job_id: str) -> Mapping[Stream, int]:
        log = self._log(job_id)
        with log.notifier:
            return dict(log.sizes)

    def discard(self, job_id: str) -> None:
        with self._lock:
            log = self._logs.pop(job_id, None)
            self._finished.pop(job_id, None)
            if log is not None:
                self._dropped(log.drop_all())
            release = self._release_due()
        if release:
            release_free_memory_soon()

    def _dropped(self, freed: int) -> None:
        """Account for a whole log's output dropped. Call with ``_lock`` held."""
        self._total -= freed
        self._freed += freed

    def _release_due(self) -> bool:
        """Whether enough was dropped to give memory back now. Call with ``_lock`` held."""
        if self._freed < RELEASE_AFTER_BYTES:
            return False
        self._freed = 0
        return True

    def kept_bytes(self) -> int:
        """Bytes of output held for all jobs."""
        with self._lock:
            return self._total


__all__ = ["JobLog", "LogFollower", "MemoryOutputConfig", "MemoryOutputStore"]
