"""A job's index file: the order in which ranges of the two streams arrived, and which were lost.

The data files say *what* each stream holds; the index says in which order the ranges of
stdout and stderr arrived (so a replay of both interleaves as the live output did) and which
ranges were lost (so a follower jumps them instead of reading a hole's zeros).

Format: a 16-byte header (``WKSPOOL`` and a version byte, 8 reserved bytes), then fixed-size
16-byte records, appended and never rewritten: ``offset`` (u64), ``length`` (u32), ``stream``
(u8: 0 stdout, 1 stderr), ``kind`` (u8: 0 data, 1 lost), two bytes of padding, little-endian.
Consecutive data of one stream is one record (the writer extends the last record in memory
until the other stream or a loss comes), so a job writing only stdout has one record per
4 GiB, and an interleaving one a record per switch.

Each stream's records are contiguous: a record starts where that stream's previous one
ended. The data files are the truth for bytes: :func:`scan` keeps the longest valid prefix
of the index and covers whatever the files hold past it with data records. What a crash
costs is therefore order, never bytes: the records still buffered when the process died
(the last switches between streams, at most ``joblog.FLUSH_RECORDS``) replay stream by
stream, and a loss not yet recorded reads as the hole's zeros.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import attrs

from worker_core.plugin import Stream

MAGIC = b"WKSPOOL"
VERSION = 1
HEADER = MAGIC + bytes([VERSION]) + bytes(8)
HEADER_SIZE = len(HEADER)
_RECORD = struct.Struct("<QIBBxx")
RECORD_SIZE = _RECORD.size
#: The longest range one record holds (its length is a u32); longer ones take several.
MAX_RECORD_LENGTH = 0xFFFFFFFF

STREAMS: tuple[Stream, Stream] = (Stream.STDOUT, Stream.STDERR)
_CODES = {Stream.STDOUT: 0, Stream.STDERR: 1}
_DATA, _LOST = 0, 1

#: Records read from an index file at a time (64 KiB).
READ_BATCH = 4096

STDOUT_FILE, STDERR_FILE, INDEX_FILE = "stdout", "stderr", "index"
FILE_OF: dict[Stream, str] = {Stream.STDOUT: STDOUT_FILE, Stream.STDERR: STDERR_FILE}


class Record(NamedTuple):
    """Bytes ``[offset, offset + length)`` of ``stream``: written (``lost`` False) or lost."""

    stream: Stream
    offset: int
    length: int
    lost: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


def position(index: int) -> int:
    """The file offset of record ``index``."""
    return HEADER_SIZE + index * RECORD_SIZE


def split(stream: Stream, offset: int, length: int, lost: bool) -> list[Record]:
    """A range as records no longer than :data:`MAX_RECORD_LENGTH`."""
    records = []
    while length > 0:
        piece = min(length, MAX_RECORD_LENGTH)
        records.append(Record(stream, offset, piece, lost))
        offset += piece
        length -= piece
    return records


def encode(records: Iterable[Record]) -> bytes:
    return b"".join(
        _RECORD.pack(r.offset, r.length, _CODES[r.stream], _LOST if r.lost else _DATA)
        for r in records
    )


def decode(raw: bytes) -> list[Record]:
    """The records in ``raw`` (whole records only), stopping at the first malformed one."""
    records = []
    usable = len(raw) - len(raw) % RECORD_SIZE
    for offset, length, code, kind in _RECORD.iter_unpack(raw[:usable]):
        if code > 1 or kind > 1 or length == 0:
            break
        records.append(Record(STREAMS[code], offset, length, kind == _LOST))
    return records


@attrs.frozen
class Scan:
    """A job's state as its files hold it."""

    #: Whether the directory exists at all.
    exists: bool
    #: Whether the index starts with a header this version reads.
    header_ok: bool
    #: Records of the index that are valid, from the first (the rest are ignored).
    valid: int
    #: Records covering what the data files hold past the valid records.
    tail: tuple[Record, ...]
    #: Each stream's size: the end of its last range, lost ones included.
    sizes: dict[Stream, int]
    #: Bytes the data files hold (written ranges), for the quota.
    data_bytes: int


EMPTY_SCAN = Scan(
    exists=False,
    header_ok=False,
    valid=0,
    tail=(),
    sizes={Stream.STDOUT: 0, Stream.STDERR: 0},
    data_bytes=0,
)


def _file_size(directory: str, name: str) -> int:
    try:
        return os.stat(os.path.join(directory, name), follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def _read_index(directory: str) -> tuple[bool, Sequence[Record]]:
    """Whether the index has a header this version reads, and its records (all of them)."""
    try:
        fd = os.open(
            os.path.join(directory, INDEX_FILE), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        )
    except FileNotFoundError:
        return False, ()
    try:
        if os.pread(fd, HEADER_SIZE, 0) != HEADER:
            return False, ()
        records: list[Record] = []
        while True:
            raw = os.pread(fd, READ_BATCH * RECORD_SIZE, position(len(records)))
            batch = decode(raw)
            records.extend(batch)
            if len(raw) < READ_BATCH * RECORD_SIZE or len(batch) < READ_BATCH:
                return True, records
    finally:
        os.close(fd)


def scan(directory: str) -> Scan:
    """Rebuild a job's state from its directory (read only: nothing is changed)."""
    if not os.path.isdir(directory):
        return EMPTY_SCAN
    try:
        header_ok, records = _read_index(directory)
    except OSError as exc:
        if exc.errno not in (errno.EIO, errno.EACCES, errno.ELOOP):
            raise
        header_ok, records = False, ()
    file_sizes = {s: _file_size(directory, FILE_OF[s]) for s in STREAMS}
    ends = {s: 0 for s in STREAMS}
    data_bytes = 0
    valid = 0
    for record in records:
        # A record must continue its stream, and written bytes must be in the file.
        if record.offset != ends[record.stream]:
            break
        if not record.lost and record.end > file_sizes[record.stream]:
            break
        ends[record.stream] = record.end
        if not record.lost:
            data_bytes += record.length
        valid += 1
    tail: list[Record] = []
    for stream in STREAMS:
        extra = file_sizes[stream] - ends[stream]
        if extra > 0:
            tail.extend(split(stream, ends[stream], extra, lost=False))
            ends[stream] += extra
            data_bytes += extra
    return Scan(
        exists=True,
        header_ok=header_ok,
        valid=valid if header_ok else 0,
        tail=tuple(tail),
        sizes=ends,
        data_bytes=data_bytes,
    )
