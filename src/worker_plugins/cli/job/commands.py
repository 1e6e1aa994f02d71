"""``worker job``: the plugin module named by the ``jobcli`` entry point.

It only adds the ``job`` group, which lives in :mod:`.group` with the table of its commands.
"""

from __future__ import annotations

import click

from worker_core import hookimpl

from .group import SUBCOMMANDS, job_group

__all__ = ["SUBCOMMANDS", "job_group", "register_commands"]


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(job_group)
