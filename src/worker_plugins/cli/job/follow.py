"""Copying a job's output to this terminal, and the exit status a finished job maps to.

Bytes are written exactly as the job wrote them (stdout to stdout, stderr to stderr), flushed
per message so a follower sees output as it happens.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import BinaryIO

import click

from worker_core.plugin import EndReason, Job, StartAt, StartPosition, Stream

from .client import OutputStream
from .render import outcome

#: Exit status when Ctrl-C ends a command (the shell's 128 + SIGINT).
EXIT_INTERRUPTED = 130


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


def exit_status(job: Job) -> tuple[int, str | None]:
    """The status ``submit --wait`` exits with, and what to say on stderr (None: nothing).

    A job that exited is reported as a shell would: its code, or 128+N if signal N killed it.
    Any other end (stopped, timed out, OOM-killed, failed to start, lost) is 1 and a message
    saying which, since no code of the job's own describes it.
    """
    if job.end_reason is EndReason.EXITED:
        if job.exit_code is not None:
            return job.exit_code, None
        if job.signal is not None:
            return 128 + job.signal, None
    return 1, f"job {job.id} {outcome(job)}"
