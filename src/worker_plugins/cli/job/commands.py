"""``worker job``: submit, inspect, stop and follow jobs on a ``worker serve`` server.

The plugin module named by the ``jobcli`` entry point: it only adds the ``job`` group.
Every command fails with one line on stderr and a documented exit code (see
:mod:`.errors`), never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import attrs
import click

from worker_core.plugin import BOTH_STREAMS, JobQuery, StartAt, StartPosition, Stream, hookimpl
from worker_plugins.cli.spec_options import build_spec, spec_options

from . import render
from .client import WorkerClient
from .connection import ConnectionFlags, connection_options, open_channel, resolve
from .errors import ClientError
from .filters import LABEL, WHEN
from .follow import (
    EXIT_INTERRUPTED,
    OutputSink,
    copy_all,
    exit_status,
    terminal_outputs,
)

F = TypeVar("F", bound=Callable[..., Any])

PREFIX = "worker job"


def _fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"{PREFIX}: error: {message}", err=True)
    sys.exit(exit_code)


def reports_errors(command: F) -> F:
    """Turn every expected failure into one line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ClientError as exc:
            _fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            # Ctrl-C only ever ends this client; a remote job is left as it is.
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # `worker job tail ID | head`: the reader is gone, which is not an error here.
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


def connect(flags: ConnectionFlags) -> WorkerClient:
    settings = resolve(flags)
    return WorkerClient(open_channel(settings), settings.server)


# ---------------------------------------------------------------------------------------------


@click.group("job")
def job_group() -> None:
    """Submit, inspect, stop and follow jobs on a worker server (over mutual TLS).

    \b
    Examples:
      export WORKER_SERVER=127.0.0.1:50051 WORKER_CA=certs/ca.pem \\
             WORKER_CERT=certs/alice.pem WORKER_KEY=certs/alice.key
      worker job submit -- sh -c 'echo hello; sleep 30'       # prints the job id
      worker job submit --wait --memory 64M -- make -j2        # streams output, exits like make
      worker job submit --name nightly --label team=data -- ./etl.sh
      worker job list --state running
      worker job list --label team=data --ended-after 2h --limit 20
      worker job tail -f 7f3a                                  # any unique id prefix (>= 4)
      worker job tail --stderr JOB_ID > errors.log
      worker job stop --grace 5 JOB_ID
      worker job get --json JOB_ID | jq .exit_code
      worker job purge --ended-before 7d                       # remove week-old records

    \b
    Each command takes --server, --ca, --cert and --key; they default to the environment
    (WORKER_SERVER, WORKER_CA, WORKER_CERT, WORKER_KEY), then to the client config file
    ~/.config/worker/client.toml (keys server, ca, cert, key; paths relative to the file).

    \b
    A JOB_ID may be shortened to any prefix of at least 4 characters that only one job you
    may see starts with.

    \b
    Exit codes: 0 success; 1 the server refused or failed the request; 2 bad usage;
    69 server unreachable or TLS handshake failed; 75 no answer in time; 78 client setup
    (certificates, config file); 130 interrupted. `submit --wait` exits with the job's code.
    """


@job_group.command(
    "submit",
    context_settings={"allow_interspersed_args": False},
    short_help="Start a job and print its id (--wait: follow it, exit with its code).",
)
@click.option(
    "-w", "--wait", is_flag=True, help="Stream the job's output and exit with its exit code."
)
@click.option("--name", metavar="NAME", help="A name for the job, shown by list (not unique).")
@click.option(
    "--label",
    "labels",
    type=LABEL,
    multiple=True,
    metavar="KEY=VALUE",
    help="A label for the job, shown and filtered on by list (repeatable).",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Submitting again with the same KEY returns the first job (even after a server "
    "restart) instead of starting another: safe to retry.",
)
@spec_options
@connection_options
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@reports_errors
def submit_command(
    wait: bool,
    name: str | None,
    labels: tuple[tuple[str, str], ...],
    idempotency_key: str | None,
    connection: ConnectionFlags,
    command: str,
    args: tuple[str, ...],
    **spec_flags: Any,
) -> None:
    """Start COMMAND [ARGS...] on the server; print the job's id.

    Put `--` before the command so its own flags are not read as worker's:

    \b
      worker job submit --cpus 0.5 --timeout 60 -- python3 train.py --epochs 3

    With --wait, the job's stdout and stderr are copied here byte for byte as it runs, and
    the exit status is the job's own (128+N if signal N killed it). A job that was stopped,
    timed out, was OOM-killed or failed to start exits 1 with a line saying which. Ctrl-C
    stops following but leaves the job running (and prints its id).

    A retry after a lost answer (a timeout, a dropped connection) with the same
    --idempotency-key prints the same id and starts nothing new.
    """
    spec = attrs.evolve(
        build_spec(command, args, **spec_flags), name=name or "", labels=dict(labels)
    )
    with connect(connection) as client:
        job = client.submit(spec, idempotency_key=idempotency_key)
        if not wait:
            click.echo(job.id)
            return
        try:
            copy_all(
                client.tail(job.id, BOTH_STREAMS, StartAt.BEGINNING),
                OutputSink(StartAt.BEGINNING, terminal_outputs()),
            )
            job = client.wait(job.id)
        except KeyboardInterrupt:
            click.echo(
                f"{PREFIX}: job {job.id} keeps running (`worker job stop {job.id}` stops it)",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)
    code, message = exit_status(job)
    if message:
        click.echo(f"{PREFIX}: {message}", err=True)
    sys.exit(code)


@job_group.command("stop", short_help="Stop a job and print how it ended.")
@click.argument("job_id")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Seconds between SIGTERM and SIGKILL. [default: the server's]",
)
@click.option("--force", is_flag=True, help="SIGKILL at once, no grace period.")
@connection_options
@reports_errors
def stop_command(
    job_id: str, grace: float | None, force: bool, connection: ConnectionFlags
) -> None:
    """Stop a job (SIGTERM to all its processes, then SIGKILL) and print how it ended.

    Waits until the job has ended. Stopping a job that already ended prints its final status.
    """
    with connect(connection) as client:
        job = client.stop(job_id, grace=grace, force=force)
    click.echo(render.status_line(job))


@job_group.command("get", short_help="Show one job (--json for the full record).")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@connection_options
@reports_errors
def get_command(job_id: str, as_json: bool, connection: ConnectionFlags) -> None:
    """Show one job: command, state, how it ended, times, limits and facts."""
    with connect(connection) as client:
        job = client.get(job_id)
    if as_json:
        click.echo(json.dumps(render.job_dict(job), indent=2))
    else:
        click.echo(render.job_summary(job))


@job_group.command("list", short_help="List the jobs you may see.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of job records.")
@click.option(
    "--state",
    "states",
    type=click.Choice(sorted(render.STATE_NAMES)),
    multiple=True,
    help="Only jobs in this state (repeatable: any of them).",
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

    STATE shows how a job ended once it has (exited, stopped, timed_out, oom_killed,
    failed_to_start, lost, shutdown, dependency_failed); AGE is the time since it was
    submitted, TIME how long it ran. The server sends long lists in pages; they are all
    fetched (or, with --limit, as many as needed).

    \b
    WHEN is a time ago (90s, 30m, 2h, 7d, 1w) or an ISO time (2024-05-01T12:00, local
    unless it has an offset):
      worker job list --ended-after 1d --state ended --label team=data
    """
    query = JobQuery(
        states=frozenset(render.STATE_NAMES[s] for s in states),
        owner=owner,
        name=name,
        labels=dict(labels),
        created_after=created_after,
        created_before=created_before,
        ended_after=ended_after,
        ended_before=ended_before,
    )
    with connect(connection) as client:
        jobs = list(client.list(query, limit=limit))
    if as_json:
        ordered = sorted(jobs, key=lambda j: j.created_at)
        click.echo(json.dumps([render.job_dict(job) for job in ordered], indent=2))
    elif jobs:
        click.echo(render.job_table(jobs))


@job_group.command("purge", short_help="Remove finished jobs' records and output.")
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


@job_group.command("tail", short_help="Print a job's output (-f: follow until it ends).")
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--stdout", "which", flag_value="stdout", help="Only the job's stdout.")
@click.option("--stderr", "which", flag_value="stderr", help="Only the job's stderr.")
@click.option("--all", "which", flag_value="all", default=True, help="Both streams (the default).")
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
    which: str,
    no_past: bool,
    from_offset: str | None,
    connection: ConnectionFlags,
) -> None:
    """Print a job's output: stdout here to stdout, stderr to stderr, byte for byte.

    Without -f, prints exactly what the job has written so far and exits. With -f, follows
    live output and exits when the job has ended and everything was printed; Ctrl-C stops
    following and leaves the job running.

    \b
    Resume after an interruption with the byte counts already received:
      worker job tail -f --from 1048576 --stdout JOB_ID
      worker job tail -f --from stdout=1048576,stderr=2048 JOB_ID
    """
    streams = BOTH_STREAMS if which == "all" else frozenset({Stream(which)})
    if no_past and from_offset is not None:
        raise click.UsageError("--no-past and --from cannot be used together")
    start: StartPosition = StartAt.END if no_past else StartAt.BEGINNING
    if from_offset is not None:
        start = parse_from(from_offset, streams)
    with connect(connection) as client:
        # Without -f the server ends the stream at the output's size when the call arrived.
        output = client.tail(job_id, streams, start, until_now=not follow)
        copy_all(output, OutputSink(start, terminal_outputs()))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(job_group)
