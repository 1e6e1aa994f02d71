"""The ``worker job`` group: submit, inspect, control and follow jobs on a ``worker serve``
server.

Its commands live by what they do (:mod:`.submitting`, :mod:`.viewing`, :mod:`.tailing`,
:mod:`.controlling`) and each module is imported when one of its commands runs, so
``worker job get`` does not pay for the definitions of ``submit``'s thirty flags. Every
command fails with one line on stderr and a documented exit code (see :mod:`.errors`),
never a traceback.

The group is apart from the plugin that registers it (:mod:`.commands`) so that the
``worker`` program can import it alone (``worker_core.cli.BUILTIN_COMMANDS``): the plugin
module imports the hook marker, and with it pluggy.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click

__all__ = ["SUBCOMMANDS", "Subcommand", "job_group"]


class Subcommand(NamedTuple):
    """Where a ``worker job`` command is defined, and its short help (kept equal to the
    command's own by a test), so listing the commands imports none of them."""

    module: str
    attribute: str
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "submit": Subcommand(
        "submitting",
        "submit_command",
        "Start a job and print its id (--wait: follow it, exit with its code).",
    ),
    "wait": Subcommand(
        "submitting", "wait_command", "Wait for jobs to end; exit with how they ended."
    ),
    "get": Subcommand("viewing", "get_command", "Show one job (--json for the full record)."),
    "list": Subcommand("viewing", "list_command", "List the jobs you may see."),
    "tail": Subcommand(
        "tailing", "tail_command", "Print a job's output (-f: follow until it ends)."
    ),
    "stop": Subcommand("controlling", "stop_command", "Stop a job and print how it ended."),
    "signal": Subcommand(
        "controlling", "signal_command", "Send a signal to every process of a job."
    ),
    "pause": Subcommand("controlling", "pause_command", "Freeze every process of a running job."),
    "resume": Subcommand("controlling", "resume_command", "Thaw a paused job."),
    "release": Subcommand("controlling", "release_command", "Let held jobs be scheduled."),
    "purge": Subcommand(
        "controlling", "purge_command", "Remove finished jobs' records and output."
    ),
}


class JobCommands(click.Group):
    """The ``job`` group: each command imported from :data:`SUBCOMMANDS` when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*SUBCOMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in SUBCOMMANDS:
            where = SUBCOMMANDS[cmd_name]
            module = importlib.import_module(f"{__package__}.{where.module}")
            self.add_command(getattr(module, where.attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:  # shortened as click shortens a loaded command's help
                command = click.Command(name, help=SUBCOMMANDS[name].summary)
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group("job", cls=JobCommands)
def job_group() -> None:
    """Submit, inspect, stop and follow jobs on a worker server (over mutual TLS).

    \b
    Examples:
      export WORKER_SERVER=127.0.0.1:50051 WORKER_CA=certs/ca.pem \\
             WORKER_CERT=certs/alice.pem WORKER_KEY=certs/alice.key
      worker job submit -- sh -c 'echo hello; sleep 30'       # prints the job id
      worker job submit --wait --memory 64M -- make -j2        # streams output, exits like make
      worker job submit --name nightly --label team=data -- ./etl.sh
      worker job submit --hold --after 7f3a -- ./report.sh     # held; after 7f3a exits 0
      worker job release 91bc
      worker job list --state running
      worker job list --label team=data --ended-after 2h --limit 20
      worker job tail -f 7f3a                                  # any unique id prefix (>= 4)
      worker job tail -n 20 --stderr JOB_ID
      worker job signal JOB_ID USR1
      worker job pause JOB_ID; worker job resume JOB_ID
      worker job wait --timeout 10m JOB_ID JOB_ID
      worker job stop --grace 5s JOB_ID
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
    69 server unreachable or TLS handshake failed; 75 no answer in time (or `wait
    --timeout` gave up); 78 client setup (certificates, config file); 130 interrupted.
    `submit --wait` and `wait` exit with the job's status (the README's table).
    """
