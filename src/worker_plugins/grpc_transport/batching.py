"""Turning a follower's chunks into Tail messages.

The pump reads a job's pipes in whatever pieces the kernel hands over (often a few KiB);
one gRPC message per piece would cost more in framing and per-message overhead than the data
itself. Adjacent chunks of the same stream are merged into one message up to a size limit,
and a chunk larger than the limit is split, so no message outgrows what a client accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from worker_core.output import Chunk, StartAt, StartPosition, Stream

from . import worker_pb2 as pb
from .convert import STREAM_TO_PB


def batch(chunks: Iterable[Chunk], limit: int) -> Iterator[pb.OutputChunk]:
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


def _message(stream: Stream | None, offset: int, parts: list[bytes]) -> pb.OutputChunk:
    assert stream is not None  # set together with the first part
    return pb.OutputChunk(
        stream=STREAM_TO_PB[stream],
        offset=offset,
        data=parts[0] if len(parts) == 1 else b"".join(parts),
    )


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
