"""``worker job get``, ``list`` and ``tail``: what jobs are, and what they wrote."""

from __future__ import annotations

import json

import click

from worker_core import BOTH_STREAMS, StartAt, StartPosition, Stream

from . import render
from .connection import ConnectionFlags, connection_options
from .filters import LABEL, WHEN
from .follow import OutputSink, copy_all, last_lines, terminal_outputs
from .session import PREFIX, connect, reports_errors


@click.command("get", short_help="Show one job (--json for the full record).")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@connection_options
@reports_errors
def get_command(job_id: str, as_json: bool, connection: ConnectionFlags) -> None:
    """Show one job: command, state (and why a queued job waits), how it ended, times,
    limits, what a running job uses now, and the facts plugins recorded.

    --json prints the library's record (`worker_core.job_to_dict`), numbers as numbers, with
    `usage` added while the job runs or is paused.
    """
    with connect(connection) as client:
        job, usage = client.get_with_usage(job_id)
    if as_json:
        click.echo(json.dumps(render.job_dict(job, usage), indent=2))
    else:
        click.echo(render.job_summary(job, usage))


@click.command("list", short_help="List the jobs you may see.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of job records.")
@click.option(
    "--state",
    "states",
    type=click.Choice(render.STATE_WORDS, case_sensitive=False),
    multiple=True,
    help="Only jobs in this state, as the STATE column shows it; `ended` for every ended "
    "job (repeatable: any of them).",
)
@click.option("--owner", metavar="NAME", help="Only jobs owned by NAME (a certificate CN).")
@click.option("--name", metavar="NAME", help="Only jobs with this name.")
@click.option(
    "--label",
    "labels",
    type=LABEL,
    multiple=True,
    metavar="KEY=VALUE",
    help="Only jobs with this label (repeatable: all of them).",
)
@click.option("--created-after", type=WHEN, metavar="WHEN", help="Only jobs submitted after WHEN.")
@click.option(
    "--created-before", type=WHEN, metavar="WHEN", help="Only jobs submitted before WHEN."
)
@click.option("--ended-after", type=WHEN, metavar="WHEN", help="Only jobs that ended after WHEN.")
@click.option("--ended-before", type=WHEN, metavar="WHEN", help="Only jobs that ended before WHEN.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Only the N most recently submitted of the matching jobs.",
)
@connection_options
@reports_errors
def list_command(
    as_json: bool,
    states: tuple[str, ...],
    owner: str | None,
    name: str | None,
    labels: tuple[tuple[str, str], ...],
    created_after: float | None,
    created_before: float | None,
    ended_after: float | None,
    ended_before: float | None,
    limit: int | None,
    connection: ConnectionFlags,
) -> None:
    """List the jobs you may see, oldest first (with --limit N, the N newest).

    STATE is one word: the state of a job that has not ended (queued, held, pending,
    running, paused, stopping), else how it ended (exited, stopped, timed_out, oom_killed,
    failed_to_start, lost, shutdown, dependency_failed); --state takes the same words, and
    `ended` for any ended job. REASON says why a queued job waits (priority, resources,
    running_cap, owner_cap, dependency, begin_time, plugin), as squeue's does. AGE is the time
    since it was submitted, TIME how long it ran. The server sends long lists in pages; they
    are all fetched (or, with --limit, as many as needed).

    \b
    WHEN is a time ago (90s, 30m, 2h, 7d, 1w) or an ISO time (2024-05-01T12:00, local
    unless it has an offset):
      worker job list --ended-after 1d --state ended --label team=data
    """
    words = {state.lower() for state in states}
    with connect(connection) as client:
        jobs = list(
            client.list(
                states=render.server_states(words),
                owner=owner,
                name=name,
                labels=dict(labels),
                created_after=created_after,
                created_before=created_before,
                ended_after=ended_after,
                ended_before=ended_before,
                limit=limit,
                keep=(lambda job: render.matches_state(job, words)) if words else None,
            )
        )
    if as_json:
        ordered = sorted(jobs, key=lambda j: j.created_at)
        click.echo(json.dumps([render.job_dict(job) for job in ordered], indent=2))
        return
    click.echo(render.job_table(jobs))
    if not jobs:
        filtered = any(
            value is not None and value not in ((), {})
            for value in (states, owner, name, labels, created_after, created_before,
                          ended_after, ended_before)
        )  # fmt: skip
        click.echo(f"{PREFIX}: no jobs {'match' if filtered else 'to show'}", err=True)


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
