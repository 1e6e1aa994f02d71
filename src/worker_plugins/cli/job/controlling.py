"""``worker job stop``, ``signal``, ``pause``, ``resume``, ``release`` and ``purge``."""

from __future__ import annotations

import signal as signals
import sys
from typing import Any

import click

from worker_plugins.cli.values import GRACE

from . import render
from .connection import ConnectionFlags, connection_options
from .errors import EXIT_REFUSED, ClientError
from .filters import WHEN
from .session import PREFIX, connect, note, reports_errors

#: States in which a stop sends signals (a queued or held job just ends, never having run).
_RUNNING = frozenset({"pending", "running", "paused", "stopping"})


@click.command("stop", short_help="Stop a job and print how it ended.")
@click.argument("job_id")
@click.option(
    "--grace",
    type=GRACE,
    metavar="DURATION",
    help="Time between SIGTERM and SIGKILL (10s, 1m; 0 for none). [default: the server's]",
)
@click.option("--force", is_flag=True, help="SIGKILL at once, no grace period.")
@connection_options
@reports_errors
def stop_command(
    job_id: str, grace: float | None, force: bool, connection: ConnectionFlags
) -> None:
    """Stop a job (SIGTERM to all its processes, then SIGKILL) and print how it ended.

    Waits until the job has ended; at a terminal it says so while it waits. A queued or held
    job ends without ever starting. Stopping a job that already ended prints its final status.
    """
    with connect(connection) as client:
        if sys.stderr.isatty():
            job = client.get(job_id)
            if job.state in _RUNNING:
                if force:
                    note(f"sent SIGKILL to job {job.id}; waiting for it to end")
                else:
                    wait = (
                        "the server's grace period" if grace is None else render.seconds_text(grace)
                    )
                    note(
                        f"sent SIGTERM to job {job.id}; waiting up to {wait} for it to end "
                        "before SIGKILL"
                    )
            job_id = job.id
        job = client.stop(job_id, grace=grace, force=force)
    click.echo(render.status_line(job))


def parse_signal(text: str) -> int:
    """A signal by name (``TERM``, ``SIGTERM``, ``sigusr1``) or number (``15``), with or
    without kill(1)'s dash (``-9``, ``-KILL``); ``ValueError`` naming the problem for one this
    system does not have."""
    given = text.strip()
    text = given[1:] if given.startswith("-") and len(given) > 1 else given
    valid = signals.valid_signals()
    if text.isdigit():
        number = int(text)
        if number in valid:
            return number
        raise ValueError(f"{given!r} is not a signal number here (1-{max(valid)})")
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    found = getattr(signals.Signals, name, None)  # aliases too: SIGIOT is SIGABRT
    if isinstance(found, signals.Signals):
        return int(found)
    raise ValueError(f"{given!r} is not a signal name (e.g. TERM, SIGUSR1, HUP, 15)")


class SignalType(click.ParamType[int]):
    name = "signal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_signal(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command(
    "signal",
    short_help="Send a signal to every process of a job.",
    # `worker job signal ID -9`, as kill(1) takes it: the dash is the signal's, not an option.
    context_settings={"ignore_unknown_options": True},
)
@click.argument("job_id")
@click.argument("signum", metavar="SIGNAL", type=SignalType())
@connection_options
@reports_errors
def signal_command(job_id: str, signum: int, connection: ConnectionFlags) -> None:
    """Send SIGNAL to every process of a running or paused job (its whole cgroup with the
    cgroups plugin, its process group and their children otherwise).

    SIGNAL is a name (TERM, SIGTERM, USR1) or a number (15), with or without kill's dash
    (-9, -KILL). It only delivers the signal:
    the job may catch it and go on; `worker job stop` is what ends a job for sure.

    \b
      worker job signal 7f3a HUP       # e.g. to reopen its log files
    """
    with connect(connection) as client:
        job = client.signal(job_id, signum)
    click.echo(f"{job.id}: sent {render.signal_name(signum)} ({job.state})")


@click.command("pause", short_help="Freeze every process of a running job.")
@click.argument("job_id")
@connection_options
@reports_errors
def pause_command(job_id: str, connection: ConnectionFlags) -> None:
    """Freeze every process of a running job until `worker job resume`. Its time limit does
    not run while it is paused; stopping it works as for a running job."""
    with connect(connection) as client:
        job = client.pause(job_id)
    click.echo(render.status_line(job))


@click.command("resume", short_help="Thaw a paused job.")
@click.argument("job_id")
@connection_options
@reports_errors
def resume_command(job_id: str, connection: ConnectionFlags) -> None:
    """Let a paused job run again."""
    with connect(connection) as client:
        job = client.resume(job_id)
    click.echo(render.status_line(job))


@click.command("release", short_help="Let held jobs be scheduled.")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@connection_options
@reports_errors
def release_command(job_ids: tuple[str, ...], connection: ConnectionFlags) -> None:
    """Let jobs submitted with --hold be scheduled: each starts when the queue lets it (its
    dependencies, begin time and the server's limits still apply). Prints each one's state;
    a job that cannot be released is one error line, and the others are still released."""
    failed = False
    with connect(connection) as client:
        for job_id in job_ids:
            try:
                job = client.release(job_id)
            except ClientError as exc:
                if exc.status is None:  # no answer at all: the others would fail the same way
                    raise
                click.echo(f"{PREFIX}: error: {exc.message}", err=True)
                failed = True
                continue
            click.echo(render.status_line(job))
    if failed:
        sys.exit(EXIT_REFUSED)


@click.command("purge", short_help="Remove finished jobs' records and output.")
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option(
    "--ended-before",
    type=WHEN,
    metavar="WHEN",
    help="Instead of ids: every finished job that ended before WHEN (7d: a week ago).",
)
@click.option(
    "--owner",
    metavar="NAME",
    help="Instead of ids: only NAME's finished jobs (with or without --ended-before).",
)
@connection_options
@reports_errors
def purge_command(
    job_ids: tuple[str, ...],
    ended_before: float | None,
    owner: str | None,
    connection: ConnectionFlags,
) -> None:
    """Remove finished jobs for good: their records and their output. Prints each id removed.

    Named jobs are removed all or none: a job still running, one you may not purge or an
    unknown id removes nothing. With --ended-before and/or --owner instead, every matching
    finished job you may purge is removed; running jobs never are.

    \b
      worker job purge 7f3a 91bc
      worker job purge --ended-before 7d
      worker job purge --ended-before 2024-05-01 --owner alice
    """
    filtered = ended_before is not None or owner is not None
    if job_ids and filtered:
        raise click.UsageError("give job ids, or --ended-before/--owner, not both")
    if not job_ids and not filtered:
        raise click.UsageError("name the jobs to purge, or choose them with --ended-before/--owner")
    with connect(connection) as client:
        removed = client.purge(job_ids) if job_ids else client.purge_matching(ended_before, owner)
    for job_id in removed:
        click.echo(job_id)
    if not removed:
        click.echo(f"{PREFIX}: no finished job matched; nothing was removed", err=True)
