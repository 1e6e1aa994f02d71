"""Copying a job's output to this terminal, and the exit status a finished job maps to.

Bytes are written exactly as the job wrote them (stdout to stdout, stderr to stderr), flushed
per message so a follower sees output as it happens.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, BinaryIO

import click

from worker_core import StartAt, StartPosition, Stream
from worker_plugins.cli.exit_status import EXIT_INTERRUPTED, simply_exited
from worker_plugins.cli.exit_status import exit_status as job_exit_status

from .render import outcome

if TYPE_CHECKING:
    from .client import OutputStream
    from .view import JobView

__all__ = ["EXIT_INTERRUPTED", "OutputSink", "copy_all", "exit_status", "last_lines"]


class OutputSink:
    """Writes chunks to the matching local stream and notices gaps in the offsets.

    A gap means the server no longer had those bytes (its per-job retention cap); the user is
    told once per gap on stderr, since silently skipping output would misreport what the job
    wrote.
    """

    def __init__(self, start: StartPosition, outputs: Mapping[Stream, BinaryIO]) -> None:
        self._outputs = outputs
        self._next: dict[Stream, int | None]
        if start is StartAt.BEGINNING:
            self._next = dict.fromkeys(Stream, 0)
        elif start is StartAt.END:
            self._next = dict.fromkeys(Stream, None)
        else:
            self._next = {s: start.get(s, 0) for s in Stream}

    def write(self, stream: Stream, offset: int, data: bytes) -> None:
        expected = self._next[stream]
        if expected is not None and offset > expected:
            click.echo(
                f"worker job: warning: {offset - expected} bytes of {stream.value} (from offset "
                f"{expected}) are no longer kept by the server and were skipped",
                err=True,
            )
        out = self._outputs[stream]
        out.write(data)
        out.flush()
        self._next[stream] = offset + len(data)


def terminal_outputs() -> dict[Stream, BinaryIO]:
    return {
        Stream.STDOUT: sys.stdout.buffer,
        Stream.STDERR: sys.stderr.buffer,
    }


def copy_all(output: OutputStream, sink: OutputSink) -> None:
    """Everything the stream sends, until the server ends it (the job ended and all was sent)."""
    try:
        for stream, offset, data in output:
            sink.write(stream, offset, data)
    finally:
        output.cancel()  # a no-op once the stream ended; ends it on Ctrl-C or a write error


def last_lines(
    output: Iterable[tuple[Stream, int, bytes]], count: int
) -> tuple[dict[Stream, bytes], dict[Stream, int]]:
    """The last ``count`` lines of each stream ``output`` sends, and each stream's size.

    Only ``count`` lines per stream are kept while reading (a line still open at the end
    counts as one), so a long output costs time to read, not memory beyond those lines.
    """
    kept: dict[Stream, deque[bytes]] = {}
    partial: dict[Stream, bytearray] = {}
    sizes: dict[Stream, int] = {}
    for stream, offset, data in output:
        sizes[stream] = offset + len(data)
        lines = kept.setdefault(stream, deque(maxlen=max(count, 1)))
        buffer = partial.setdefault(stream, bytearray())
        buffer += data
        *complete, rest = buffer.split(b"\n")
        for line in complete:
            lines.append(bytes(line) + b"\n")
        partial[stream] = bytearray(rest)
    tails: dict[Stream, bytes] = {}
    for stream, lines in kept.items():
        if partial[stream]:
            lines.append(bytes(partial[stream]))
        tails[stream] = b"".join(list(lines)[-count:]) if count else b""
    return tails, sizes


def exit_status(job: JobView) -> tuple[int, str | None]:
    """The status ``submit --wait`` and ``wait`` exit with (:mod:`worker_plugins.cli.exit_status`),
    and what to say on stderr (None: nothing, for a job that simply exited)."""
    code = job_exit_status(job)
    return code, None if simply_exited(job) else f"job {job.id} {outcome(job)}"
