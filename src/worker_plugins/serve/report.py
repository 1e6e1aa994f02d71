"""What ``worker serve`` says when it is up: the summary line and the warnings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from worker_core.plugin import Engine

log = logging.getLogger("worker.serve")

NO_AUTHORIZATION_WARNING = (
    "no authorization plugin is enabled: every holder of a client certificate from the CA "
    "may run any command and stop or read any job (enable one: --plugins rbac)"
)


def say(message: str) -> None:
    """One line on stderr, as every ``worker serve`` message is written."""
    click.echo(f"worker serve: {message}", err=True)


def summary(engine: Engine, addresses: Sequence[tuple[str, str]]) -> str:
    """``listening on ADDR (grpc); plugins: ...; state dir: ...``, for the start-up line."""
    listening = ", ".join(f"{address} ({name})" for name, address in addresses)
    plugins = ", ".join(name for name, _ in engine.hooks.plugins())
    state_dir = engine.state_dir if engine.state_dir is not None else "none (nothing kept)"
    return f"listening on {listening}; plugins: {plugins}; state dir: {state_dir}"


def report_started(engine: Engine, addresses: Sequence[tuple[str, str]]) -> str:
    """Print (and log) the start-up summary and any warning; return the summary."""
    line = summary(engine, addresses)
    say(line)
    log.info("%s", line)
    if not engine.hooks.has_authorizer():
        say(f"warning: {NO_AUTHORIZATION_WARNING}")
        log.warning("%s", NO_AUTHORIZATION_WARNING)
    return line
