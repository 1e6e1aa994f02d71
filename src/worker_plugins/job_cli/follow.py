"""Copying a job's output to this terminal, and the exit status a finished job maps to.

Bytes are written exactly as the job wrote them (stdout to stdout, stderr to stderr), flushed
per message so a follower sees output as it happens.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Mapping
from typing import BinaryIO

import click

from worker_core.model import EndReason, Job
from worker_core.output import StartAt, StartPosition, Stream

from .client import OutputStream
from .errors import ClientError
from .render import outcome

#: Without ``-f``, the output of a running job is read until the stream has been quiet this
#: long (seconds): the server sends everything that exists as soon as the call starts, then
#: only what is new. The first message may take longer (the call has to be set up).
FIRST_MESSAGE_WAIT = 2.0
IDLE_WAIT = 0.3
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


class _End:
    """The reader thread's last message: the stream ended (normally or with ``error``)."""

    def __init__(self, error: ClientError | None = None) -> None:
        self.error = error


def copy_until_quiet(output: OutputStream, sink: OutputSink) -> None:
    """What the job has written so far: read until nothing new arrives for a moment.

    The protocol has no "up to now" request (Tail follows until the job ends), so a reader
    thread feeds a queue and this thread stops at the first silence, then cancels the call.
    """
    messages: queue.Queue[tuple[Stream, int, bytes] | _End] = queue.Queue()

    def pump() -> None:
        try:
            for item in output:
                messages.put(item)
        except ClientError as exc:
            messages.put(_End(exc))
        else:
            messages.put(_End())

    reader = threading.Thread(target=pump, name="worker-job-tail", daemon=True)
    reader.start()
    wait = FIRST_MESSAGE_WAIT
    try:
        while True:
            try:
                item = messages.get(timeout=wait)
            except queue.Empty:
                break
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                break
            sink.write(*item)
            wait = IDLE_WAIT
    finally:
        output.cancel()
        reader.join(5.0)


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
