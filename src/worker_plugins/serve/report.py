"""What ``worker serve`` says: the start-up summary, its warnings and its status lines.

Each goes to stderr as ``worker serve: MESSAGE``, whatever the verbosity, and the summary
and warnings are logged too (``worker.serve``) for whoever collects the log. With JSON lines
(``worker --log-format json``), each is instead one record of the log, shown at any
verbosity, so every line on stderr is one JSON object.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from worker_core.plugin import InvalidSpec, Isolation, json_lines_logging

from .job_log import JobLog

if TYPE_CHECKING:
    from worker_core.plugin import Engine

log = logging.getLogger("worker.serve")

NO_AUTHORIZATION_WARNING = (
    "no authorization plugin is enabled: every holder of a client certificate from the CA "
    "may run any command and stop or read any job (enable one: --plugins rbac)"
)


def say(message: str, level: int = logging.INFO, **fields: Any) -> None:
    """One line on stderr, as every ``worker serve`` message is written (a JSON record, with
    ``fields``, when the log is JSON lines)."""
    if json_lines_logging():
        # handle(), not log(): shown at every verbosity, as the text line is.
        log.handle(log.makeRecord(log.name, level, __file__, 0, message, (), None, extra=fields))
    else:
        click.echo(f"worker serve: {message}", err=True)


def announce(message: str, level: int, **fields: Any) -> None:
    """Say ``message`` and log it at ``level``: a status line (after ``warning: `` or
    ``error: `` at those levels) and a log line, or, with JSON lines, one record with
    ``fields``."""
    if json_lines_logging():
        say(message, level, **fields)
    else:
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(level, "")
        say(prefix + message)
        log.log(level, "%s", message)


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def identity(engine: Engine) -> tuple[str, dict[str, Any]]:
    """Who jobs run as, in words and as fields: ``runas``' default identity and its rules,
    else the server's own."""
    from worker_plugins.runas import RunAs

    runas = next((p for _, p in engine.hooks.plugins() if isinstance(p, RunAs)), None)
    if runas is None:
        uid = os.geteuid()
        text = f"{_account_name(uid)} (uid {uid}, the server's own identity: runas is off)"
        return text, {"uid": uid, "gid": os.getegid(), "runas": False}
    settings = runas.config
    try:
        uid_or_none, gid_or_none = runas.identity(None, Isolation())
    except InvalidSpec:  # no default_uid and a root server that refuses root
        uid_or_none, gid_or_none = None, None
    uid = uid_or_none if uid_or_none is not None else os.geteuid()
    gid = gid_or_none if gid_or_none is not None else os.getegid()
    parts = [f"{_account_name(uid)} (uid {uid}, gid {gid})"]
    if settings.users:
        count = len(settings.users)
        parts.append(
            f"{count} mapped caller as its own account"
            if count == 1
            else f"{count} mapped callers as their own accounts"
        )
    if not settings.allow_root:
        parts.append("root refused")
    else:
        parts.append("root allowed, confined" if settings.confine_root else "root allowed")
    fields = {
        "uid": uid,
        "gid": gid,
        "runas": True,
        "mapped_callers": len(settings.users),
        "allow_root": settings.allow_root,
    }
    return ", ".join(parts), fields


def _plugin_names(engine: Engine) -> list[str]:
    # The job log is serve's own observer, not a plugin anyone enabled.
    return [name for name, plugin in engine.hooks.plugins() if not isinstance(plugin, JobLog)]


def _metrics_address(engine: Engine) -> str | None:
    metrics = dict(engine.hooks.plugins()).get("metrics")
    address = getattr(metrics, "address", None)
    return address if isinstance(address, str) else None


def summary(engine: Engine, addresses: Sequence[tuple[str, str]]) -> str:
    """``listening on ADDR (grpc); [metrics: URL; ]plugins: ...; jobs run as: ...; state dir:
    ...``, for the start-up line."""
    return _summary(engine, addresses)[0]


def _summary(engine: Engine, addresses: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    listening = ", ".join(f"{address} ({name})" for name, address in addresses)
    plugins = _plugin_names(engine)
    state_dir = engine.state_dir
    shown_dir = state_dir if state_dir is not None else "none (nothing kept)"
    runs_as, identity_fields = identity(engine)
    parts = [f"listening on {listening}"]
    metrics = _metrics_address(engine)
    if metrics is not None:
        parts.append(f"metrics: http://{metrics}/metrics")
    parts += [
        f"plugins: {', '.join(plugins)}",
        f"jobs run as: {runs_as}",
        f"state dir: {shown_dir}",
    ]
    fields = {
        "listen": [{"transport": name, "address": address} for name, address in addresses],
        "metrics": metrics,
        "plugins": plugins,
        "jobs_run_as": identity_fields,
        "state_dir": str(state_dir) if state_dir is not None else None,
    }
    return "; ".join(parts), fields


def report_started(engine: Engine, addresses: Sequence[tuple[str, str]]) -> str:
    """Print (and log) the start-up summary and any warning; return the summary."""
    line, fields = _summary(engine, addresses)
    announce(line, logging.INFO, event="started", **fields)
    if not engine.hooks.has_authorizer():
        announce(NO_AUTHORIZATION_WARNING, logging.WARNING)
    return line
