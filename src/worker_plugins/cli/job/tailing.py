"""``worker job tail``: what a job wrote, byte for byte, to this terminal."""

from __future__ import annotations

import click

from worker_core import BOTH_STREAMS, StartAt, StartPosition, Stream

from .connection import ConnectionFlags, connection_options
from .follow import OutputSink, copy_all, last_lines, terminal_outputs
from .session import connect, reports_errors


def parse_from(text: str, streams: frozenset[Stream]) -> dict[Stream, int]:
    """``--from``: ``N`` (every selected stream) or ``stdout=N,stderr=M``."""
    if text.isdigit():
        return dict.fromkeys(streams, int(text))
    offsets: dict[Stream, int] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            stream = Stream(name)
        except ValueError:
            stream = None
        if not sep or stream is None or not value.isdigit():
            raise click.BadParameter(
                f"{text!r} is not OFFSET or stdout=N,stderr=M", param_hint="--from"
            )
        offsets[stream] = int(value)
    return offsets


@click.command("tail", short_help="Print a job's output (-f: follow until it ends).")
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option(
    "--stdout", "want_stdout", is_flag=True, help="The job's stdout (with --stderr: both)."
)
@click.option(
    "--stderr", "want_stderr", is_flag=True, help="The job's stderr (with --stdout: both)."
)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    metavar="N",
    help="Only the last N lines of what the job wrote so far (of each stream); with -f, then "
    "what it writes next.",
)
@click.option("--no-past", is_flag=True, help="Skip what was written before now: only new output.")
@click.option(
    "--from",
    "from_offset",
    metavar="OFFSET",
    help="Resume at this byte offset: N (the same for each stream shown) or stdout=N,stderr=M.",
)
@connection_options
@reports_errors
def tail_command(
    job_id: str,
    follow: bool,
    want_stdout: bool,
    want_stderr: bool,
    lines: int | None,
    no_past: bool,
    from_offset: str | None,
    connection: ConnectionFlags,
) -> None:
    """Print a job's output: stdout here to stdout, stderr to stderr, byte for byte.

    Both streams unless --stdout or --stderr chooses one (both flags: both). Without -f,
    prints exactly what the job has written so far and exits. With -f, follows live output
    and exits when the job has ended and everything was printed; Ctrl-C stops following and
    leaves the job running.

    \b
      worker job tail -n 20 -f JOB_ID          # the last 20 lines, then live
    Resume after an interruption with the byte counts already received:
      worker job tail -f --from 1048576 --stdout JOB_ID
      worker job tail -f --from stdout=1048576,stderr=2048 JOB_ID
    """
    chosen = {
        s for s, wanted in ((Stream.STDOUT, want_stdout), (Stream.STDERR, want_stderr)) if wanted
    }
    streams = frozenset(chosen) if chosen else BOTH_STREAMS
    exclusive = [
        name
        for name, given in (
            ("--no-past", no_past),
            ("--from", from_offset is not None),
            ("--lines", lines is not None),
        )
        if given
    ]
    if len(exclusive) > 1:
        raise click.UsageError(f"{' and '.join(exclusive)} cannot be used together")
    start: StartPosition = StartAt.END if no_past else StartAt.BEGINNING
    if from_offset is not None:
        start = parse_from(from_offset, streams)
    outputs = terminal_outputs()
    with connect(connection) as client:
        if lines is not None:
            tails, sizes = last_lines(
                client.tail(job_id, streams, StartAt.BEGINNING, until_now=True), lines
            )
            for stream in (Stream.STDOUT, Stream.STDERR):
                if tails.get(stream):
                    outputs[stream].write(tails[stream])
                    outputs[stream].flush()
            if not follow:
                return
            start = {stream: sizes.get(stream, 0) for stream in streams}
        # Without -f the server ends the stream at the output's size when the call arrived.
        output = client.tail(job_id, streams, start, until_now=not follow)
        copy_all(output, OutputSink(start, outputs))
