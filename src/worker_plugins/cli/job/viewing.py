"""``worker job get`` and ``list``: what jobs are (``tail``, what they wrote, is
:mod:`.tailing`).

Both print :class:`~.view.JobView` tuples read straight from the server's messages; only
``--json`` builds the library's records, whose shape it prints.
"""

from __future__ import annotations

import json

import click

from . import render
from .connection import ConnectionFlags, connection_options
from .filters import LABEL, WHEN
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
