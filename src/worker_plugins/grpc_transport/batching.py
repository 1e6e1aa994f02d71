"""Turning a follower's chunks into Tail messages, and those into bytes on the wire.

The pump reads a job's pipes in whatever pieces the kernel hands over (often a few KiB);
one gRPC message per piece would cost more in framing and per-message overhead than the data
itself. Adjacent chunks of the same stream are merged into one message up to a size limit,
and a chunk larger than the limit is split, so no message outgrows what a client accepts.

A message leaves here as an :class:`EncodedChunk`, the parts of its data plus the two
numbers, and :func:`encode_output_chunk` (Tail's response serializer) writes the protobuf
encoding of ``OutputChunk`` around them in one join. Building a ``pb.OutputChunk`` would copy
the data twice, into the message and again when serializing it; on a Tail of a busy job that
copying is a large share of the server's CPU. The bytes are exactly what protobuf writes
(a test checks it), so clients see an ordinary ``OutputChunk``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import attrs

from worker_core.plugin import Chunk, StartAt, StartPosition, Stream

from . import worker_pb2 as pb
from .convert import STREAM_TO_PB


@attrs.frozen
class EncodedChunk:
    """One ``OutputChunk`` message, its data still in the parts it was read in."""

    stream: pb.Stream.ValueType
    offset: int
    parts: list[bytes]

    @property
    def data(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Field keys of OutputChunk: (field number << 3) | wire type (0 varint, 2 length-delimited).
_STREAM_KEY, _OFFSET_KEY, _DATA_KEY = b"\x08", b"\x10", b"\x1a"


def encode_output_chunk(message: EncodedChunk | pb.OutputChunk) -> bytes:
    """The wire bytes of an ``OutputChunk``, as ``SerializeToString`` would write them.

    Proto3 leaves out fields at their default value and writes the rest in field order.
    """
    if isinstance(message, pb.OutputChunk):
        return message.SerializeToString()
    head = bytearray()
    if message.stream:
        head += _STREAM_KEY + _varint(message.stream)
    if message.offset:
        head += _OFFSET_KEY + _varint(message.offset)
    size = sum(len(part) for part in message.parts)
    if size:
        head += _DATA_KEY + _varint(size)
    return b"".join([head, *message.parts])


def batch(chunks: Iterable[Chunk], limit: int) -> Iterator[EncodedChunk]:
    """OutputChunk messages for ``chunks``, in order, each at most ``limit`` bytes of data."""
    parts: list[bytes] = []
    stream: Stream | None = None
    start = end = 0
    for chunk in chunks:
        data, offset = chunk.data, chunk.offset
        while data:
            contiguous = parts and chunk.stream is stream and offset == end
            if not contiguous or end - start >= limit:
                if parts:
                    yield _message(stream, start, parts)
                parts, stream, start, end = [], chunk.stream, offset, offset
            room = limit - (end - start)
            piece, data = data[:room], data[room:]
            parts.append(piece)
            end += len(piece)
            offset += len(piece)
    if parts:
        yield _message(stream, start, parts)


def _message(stream: Stream | None, offset: int, parts: list[bytes]) -> EncodedChunk:
    assert stream is not None  # set together with the first part
    return EncodedChunk(STREAM_TO_PB[stream], offset, parts)


class Horizon:
    """Where a Tail with ``until_now`` ends: each stream's size when the call arrived.

    Output written after that is not sent, and the call ends once every requested stream has
    reached its horizon (at once for a stream the follower starts at or past it).
    """

    def __init__(self, ends: Mapping[Stream, int], start: StartPosition) -> None:
        self._ends = dict(ends)
        self._done = {s for s, end in self._ends.items() if _start_of(s, start, end) >= end}

    @property
    def reached(self) -> bool:
        return self._done >= self._ends.keys()

    def clip(self, chunks: Iterable[Chunk]) -> list[Chunk]:
        """``chunks`` cut at the horizon."""
        kept = []
        for chunk in chunks:
            end = self._ends.get(chunk.stream)
            if end is None or chunk.stream in self._done:
                continue
            piece = chunk
            if chunk.end >= end:
                self._done.add(chunk.stream)
                piece = Chunk(
                    chunk.job_id, chunk.stream, chunk.offset, chunk.data[: end - chunk.offset]
                )
            if piece.data:
                kept.append(piece)
        return kept


def _start_of(stream: Stream, start: StartPosition, end: int) -> int:
    if start is StartAt.BEGINNING:
        return 0
    if start is StartAt.END:
        return end
    assert isinstance(start, Mapping)
    return start.get(stream, 0)
