"""One job's log: its files being written, the losses, and what a follower may read.

The records of the log are, in order: the ones in the index file (``on_disk`` of them,
immutable), the ones finalized but not yet written there (``pending``, at most
:data:`FLUSH_RECORDS` while the disk takes them), and the last one (``current``), which grows
while the same stream keeps writing. A follower reads records on disk from the index file
and the others from a :class:`Snapshot` taken under the log's notifier, so the log holds
O(1) memory however much the job writes.

A lost range (disk full, quota) is kept apart per stream (``pending_lost``) and becomes a
record just before that stream's next written bytes (or at close): a job past its quota
writes no records at all, however long it runs.

Files are made when they are first needed: a stream's file with its first byte, the index
when a record must be kept that the files alone do not tell (output on both streams, or a
loss). A job that writes nothing costs no file, one that writes only stdout one: creating a
file is the dearest thing the spool does per job (hundreds of microseconds on a busy disk).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import NamedTuple

from worker_core.plugin import Chunk, Notifier, Stream

from . import index
from .index import FILE_OF, INDEX_FILE, STREAMS, Record, Scan
from .layout import open_job_file

log = logging.getLogger("worker.spool")

#: Finalized records buffered before they are written to the index in one write.
FLUSH_RECORDS = 64


class Snapshot(NamedTuple):
    """What a follower may read, as of ``version``."""

    version: int
    #: No record will be added or grow: the job's output is complete.
    closed: bool
    #: The log was discarded (or the follower detached): the follower ends now.
    ended: bool
    #: Records ``[0, on_disk)`` are in the index file.
    on_disk: int
    #: Records ``[tail_start, total)``, copied.
    tail_start: int
    tail: tuple[Record, ...]
    total: int
    #: The last record may still grow.
    last_open: bool


ENDED = Snapshot(-1, True, True, 0, 0, (), 0, False)


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return exc.strerror or str(exc)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> tuple[int, OSError | None]:
    """Write ``data`` at ``offset``: how many bytes were written, and the error that stopped it."""
    done = 0
    view: memoryview | bytes = data
    while done < len(data):
        try:
            n = os.pwrite(fd, view, offset + done)
        except OSError as exc:
            return done, exc
        if n == 0:
            return done, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n
        if done < len(data):
            view = memoryview(data)[done:]  # a short write (a disk filling up): no copies
    return done, None


class JobLog:
    """One job's output under ``directory``. Guarded by ``notifier``.

    Built from a :class:`~.index.Scan` of the files; closed (complete) until
    :meth:`start_writing`, so a job this process did not open never makes a follower wait.
    """

    def __init__(self, job_id: str, directory: str, scan: Scan, quota: int) -> None:
        self.notifier = Notifier()
        self.job_id = job_id
        self.directory = directory
        self.quota = quota
        self.on_disk = scan.valid
        self.pending: list[Record] = list(scan.tail)
        self.current: Record | None = None
        self.pending_lost: dict[Stream, Record] = {}
        self.sizes: dict[Stream, int] = dict(scan.sizes)
        self.written = scan.data_bytes
        self.lost = 0
        self.closed = True
        self.discarded = False
        self.version = 0
        self._header_ok = scan.header_ok
        self._fds: dict[str, int] = {}
        self._warned = False

    @property
    def total(self) -> int:
        return self.on_disk + len(self.pending) + (self.current is not None)

    # writing -----------------------------------------------------------------------------

    def start_writing(self) -> None:
        """The job runs in this process: accept output (its files are made as it comes)."""
        with self.notifier:
            if self.discarded or not self.closed:
                return
            self.closed = False
            self.version += 1
            self.notifier.notify_all()

    def _fd(self, name: str) -> int:
        """The descriptor to write file ``name`` with, made and opened on first use.
        Raises OSError (a full disk among others)."""
        fd = self._fds.get(name)
        if fd is not None:
            return fd
        fd = open_job_file(self.directory, name)
        if name == INDEX_FILE:
            try:
                # Records past the valid ones (a torn last write) go, so ours follow on. With
                # no index this version reads, the scan covered the files with pending records.
                os.ftruncate(fd, index.position(self.on_disk) if self._header_ok else 0)
            except OSError:
                os.close(fd)
                raise
        self._fds[name] = fd
        return fd

    def append(self, chunk: Chunk) -> int:
        """Write a chunk at its offset; the bytes lost doing so. Never raises OSError."""
        stream, data, offset = chunk.stream, chunk.data, chunk.offset
        with self.notifier:
            if self.closed:
                self._warn_once(f"output arrived after its log was {self._state()}")
                self.lost += len(data)
                return len(data)
            expected = self.sizes[stream]
            if offset < expected:
                # Bytes this log already has (a chunk handed twice): keep the first copy.
                data = data[expected - offset :]
                offset = expected
            elif offset > expected:
                # The engine's offsets jumped: the range between was never handed here.
                self._lose(stream, expected, offset - expected)
            length = len(data)
            if not length:
                return 0
            allowed = length
            reason = ""
            if self.quota and self.written + length > self.quota:
                allowed = max(0, self.quota - self.written)
                reason = (
                    f"its output reached the quota of {self.quota} bytes "
                    "([plugins.spool] max_bytes_per_job)"
                )
            written = 0
            if allowed:
                try:
                    fd = self._fd(FILE_OF[stream])
                except OSError as exc:
                    reason = f"its file cannot be made ({_describe(exc)})"
                else:
                    piece = data if allowed == length else memoryview(data)[:allowed]
                    written, error = _pwrite_all(fd, piece, offset)
                    if error is not None:
                        reason = _describe(error)
            if written:
                self._add_data(stream, offset, written)
            lost = length - written
            if lost:
                self._lose(stream, offset + written, lost)
                self.lost += lost
                self._warn_once(reason)
            self.sizes[stream] = offset + length
            self.version += 1
            self.notifier.notify_all()
            return lost

    def _add_data(self, stream: Stream, offset: int, length: int) -> None:
        self.written += length
        current = self.current
        if (
            current is not None
            and current.stream is stream
            and not current.lost
            and current.end == offset
            and stream not in self.pending_lost
            and current.length + length <= index.MAX_RECORD_LENGTH
        ):
            self.current = current._replace(length=current.length + length)
            return
        self._finalize_current()
        lost = self.pending_lost.pop(stream, None)
        if lost is not None:
            self.pending.extend(index.split(stream, lost.offset, lost.length, lost=True))
        self.current = Record(stream, offset, length, False)
        if len(self.pending) >= FLUSH_RECORDS:
            self._flush()

    def _lose(self, stream: Stream, offset: int, length: int) -> None:
        previous = self.pending_lost.get(stream)
        if previous is not None and previous.end == offset:
            self.pending_lost[stream] = previous._replace(length=previous.length + length)
        else:
            self.pending_lost[stream] = Record(stream, offset, length, True)

    def _finalize_current(self) -> None:
        if self.current is not None:
            self.pending.append(self.current)
            self.current = None

    def _needs_index(self) -> bool:
        """Whether the records say more than the files: both streams, or a loss."""
        if self.on_disk or self._header_ok or INDEX_FILE in self._fds:
            return True
        records = self.pending if self.current is None else [*self.pending, self.current]
        return any(r.lost or r.stream is not records[0].stream for r in records)

    def _flush(self) -> bool:
        """Write pending records to the index; False if some stay pending (disk full)."""
        if not self.pending or not self._needs_index():
            return True
        try:
            fd = self._fd(INDEX_FILE)
        except OSError:
            return False
        if not self._header_ok:
            done, error = _pwrite_all(fd, index.HEADER, 0)
            if error is not None:
                return False
            self._header_ok = True
            self.on_disk = 0
        raw = index.encode(self.pending)
        done, error = _pwrite_all(fd, raw, index.position(self.on_disk))
        # Only whole records count; a torn one is rewritten by the next flush.
        whole = done // index.RECORD_SIZE
        self.on_disk += whole
        del self.pending[:whole]
        return error is None

    def _warn_once(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "job %s: output lost: %s; the bytes are skipped (a gap in the offsets) "
                "and recorded on the job as output_lost_bytes, and the job keeps running",
                self.job_id,
                reason,
            )

    def _state(self) -> str:
        return "discarded" if self.discarded else "closed"

    def _release(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def close(self) -> None:
        """The job's output is complete: write what is pending, close the files, end followers."""
        with self.notifier:
            if self.closed:
                return
            self._finalize_current()
            for stream in STREAMS:
                lost = self.pending_lost.pop(stream, None)
                if lost is not None:
                    self.pending.extend(index.split(stream, lost.offset, lost.length, lost=True))
            if not self._flush():
                log.warning(
                    "job %s: %d records of its output index could not be written; after a "
                    "restart its output replays stream by stream past that point",
                    self.job_id,
                    len(self.pending),
                )
            self._release()
            self.closed = True
            self.version += 1
            self.notifier.notify_all()
            if self.lost:
                log.info("job %s: %d bytes of its output were lost", self.job_id, self.lost)

    def discard(self) -> None:
        """The job's output is being removed: close the files, end every follower."""
        with self.notifier:
            self._release()
            self.closed = self.discarded = True
            self.version += 1
            self.notifier.notify_all()

    # reading -----------------------------------------------------------------------------

    def snapshot(self, from_record: int) -> Snapshot:
        """What a follower at record ``from_record`` may read now. Call with the notifier held."""
        if self.discarded:
            return ENDED
        start = max(from_record, self.on_disk)
        beyond = start - self.on_disk
        records = self.pending[beyond:]
        if self.current is not None and beyond <= len(self.pending):
            records.append(self.current)
        return Snapshot(
            version=self.version,
            closed=self.closed,
            ended=False,
            on_disk=self.on_disk,
            tail_start=start,
            tail=tuple(records),
            total=self.total,
            last_open=self.current is not None and not self.closed,
        )
