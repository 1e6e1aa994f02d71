"""``worker job submit`` and ``worker job wait``: starting jobs, and waiting for them to end."""

from __future__ import annotations

import re
import sys
from typing import Any

import attrs
import click

from worker_core import BOTH_STREAMS, JobSpec, StartAt
from worker_plugins.cli.exit_status import EXIT_INTERRUPTED
from worker_plugins.cli.spec_options import build_spec, flag_for, in_flag_terms, spec_options
from worker_plugins.cli.values import GRACE

from . import render
from .connection import ConnectionFlags, connection_options
from .errors import ClientError
from .filters import LABEL
from .follow import OutputSink, copy_all, exit_status, terminal_outputs
from .session import PREFIX, connect, reports_errors
from .view import JobView

_NO_SUCH_JOB = re.compile(r"no such job: (\S+)")


def _in_flag_terms(error: ClientError, spec: JobSpec) -> ClientError:
    """A refusal of ``spec`` named by the flag that set the field: ``--memory: ...`` for an
    INVALID_ARGUMENT naming ``limits.memory_max``, ``--after-any 7f3a: no such job...`` for a
    dependency the server does not know (or the caller may not read)."""
    if error.status == "INVALID_ARGUMENT" and error.field:
        problem = error.message.removeprefix(f"{error.field}: ")
        return ClientError(in_flag_terms(error.field, problem, spec), error.exit_code)
    missing = _NO_SUCH_JOB.fullmatch(error.message) if error.status == "NOT_FOUND" else None
    if missing:
        for i, dependency in enumerate(spec.after):
            if dependency.job_id == missing[1]:
                flag = flag_for(f"after[{i}]", spec)
                return ClientError(
                    f"{flag} {dependency.job_id}: no such job (or none you may read)",
                    error.exit_code,
                )
    return error


@click.command(
    "submit",
    context_settings={"allow_interspersed_args": False},
    short_help="Start a job and print its id (--wait: follow it, exit with its code).",
)
@click.option(
    "-w", "--wait", is_flag=True, help="Stream the job's output and exit with its exit status."
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
      worker job submit --cpus 0.5 --timeout 1m -- python3 -c 'print("hi")'

    The job runs in / on the server unless --cwd names another (absolute) directory, with
    only the environment given by -e (and PATH).

    \b
    Scheduling: a job may wait in the server's queue before it runs.
      --priority N          higher starts first (-1000..1000)
      --after ID            once ID exited 0; --after-any: once ID ended at all;
                            --after-fail: once ID ended otherwise (each repeatable)
      --hold                not before `worker job release ID`
      --begin 10m|ISO-TIME  not before then

    With --wait, the job's stdout and stderr are copied here byte for byte as it runs, and
    the exit status is the job's own (128+N if signal N killed it; 124 timed out, 126 failed
    to start, 137 OOM-killed, 143 stopped: see the README's table), with a line saying how
    it ended when it did not simply exit. Ctrl-C stops following but leaves the job running
    (and prints its id).

    A retry after a lost answer (a timeout, a dropped connection) with the same
    --idempotency-key prints the same id and starts nothing new.
    """
    spec = attrs.evolve(
        build_spec(command, args, **spec_flags), name=name or "", labels=dict(labels)
    )
    with connect(connection) as client:
        try:
            job = client.submit(spec, idempotency_key=idempotency_key)
        except ClientError as exc:
            raise _in_flag_terms(exc, spec) from None
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


@click.command("wait", short_help="Wait for jobs to end; exit with how they ended.")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("--any", "any_", is_flag=True, help="Return when the first of the jobs ends.")
@click.option(
    "--timeout",
    type=GRACE,
    metavar="DURATION",
    help="Give up after this long (30s, 5m, 1h30m), exiting 75. [default: no limit]",
)
@connection_options
@reports_errors
def wait_command(
    job_ids: tuple[str, ...], any_: bool, timeout: float | None, connection: ConnectionFlags
) -> None:
    """Wait until the jobs have ended (with --any, until one has), printing how each ended.

    For one job, exits as `submit --wait` would: the job's code (see the README's table of
    exit statuses). For several, 0 if every one exited 0, else 1. A job that already ended
    answers at once.

    \b
      worker job wait 7f3a
      worker job wait --timeout 10m 7f3a 91bc && echo all done
      worker job wait --any 7f3a 91bc
    """
    from .client import WaitTimedOut

    with connect(connection) as client:
        try:
            ended: list[JobView] = (
                [client.wait_any(job_ids, timeout)] if any_ else client.wait_all(job_ids, timeout)
            )
        except WaitTimedOut as exc:
            for job in exc.ended:
                click.echo(render.status_line(job))
            raise ClientError(
                f"gave up after {render.seconds_text(timeout or 0)}: {exc.message}", exc.exit_code
            ) from None
    for job in ended:
        click.echo(render.status_line(job))
    if len(ended) == 1:
        sys.exit(exit_status(ended[0])[0])
    sys.exit(0 if all(exit_status(job)[0] == 0 for job in ended) else 1)
