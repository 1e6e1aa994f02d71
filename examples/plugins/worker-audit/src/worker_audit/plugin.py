"""The ``audit`` plugin: one JSON line per job lifecycle event and per authorization decision.

Configuration::

    [plugins.audit]
    path = "/var/log/worker/audit.jsonl"   # required; a relative path is taken from the
                                           # directory the engine starts in
    fsync = false                          # true: fsync after every line (slower, survives
                                           # a power cut)

Every line is a JSON object with ``time`` (UTC, ISO 8601) and ``event``:

- ``"job"``: a job changed state. ``state`` and ``previous`` (null when it was submitted, with
  ``command``, ``args``, ``cwd``, ``timeout`` and ``options``; the environment is left out,
  as it often carries secrets), ``pid`` from RUNNING on, and on ENDED ``end_reason``,
  ``exit_code``, ``signal``, ``message`` and ``facts``.
- ``"authorize"``: a decision on a principal's call: ``principal``, ``action``, ``job`` (null
  for a listing), ``decision`` (``"allow"``, ``"deny"`` or ``"error"``) and how the
  authorization plugins answered (``answers``: counts of allow, deny and abstain).
- ``"startup"`` and ``"shutdown"`` of the engine.

Lines are written whole under a lock and flushed at once, so concurrent engine threads never
interleave and a ``tail -f`` sees each event as it happens.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from collections.abc import Generator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs

from worker_core.plugin import Action, Config, ConfigError, Job, JobState, Principal, hookimpl

if TYPE_CHECKING:
    # The engine module is imported lazily by worker_core; a plugin only needs it for types.
    from worker_core.plugin import Engine

log = logging.getLogger("worker.audit")


@attrs.frozen
class AuditConfig:
    """The ``[plugins.audit]`` section."""

    path: str
    fsync: bool = False


class AuditLog:
    """An append-only JSON-lines file, safe to write from any thread."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._closed = False

    def open(self) -> None:
        with self._lock:
            self._open()

    def _open(self) -> IO[str]:
        if self._file is None:
            # Append mode: O_APPEND keeps each whole-line write at the end even with several
            # writers (two engines, logrotate's copytruncate).
            self._file = self.path.open("a", encoding="utf-8")
        return self._file

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a line; flushed (and fsync'd if configured) before returning."""
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            f = self._open()
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
            if self._closed:
                # An event after close (a job that outlived the shutdown wait) is still
                # recorded, without keeping the file open again.
                self._close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def job_record(job: Job, previous: JobState | None) -> dict[str, Any]:
    """The ``"job"`` line for ``job`` having moved from ``previous`` to ``job.state``."""
    record: dict[str, Any] = {
        "event": "job",
        "job": job.id,
        "owner": job.owner_name,
        "state": job.state.value,
        "previous": previous.value if previous else None,
    }
    if previous is None:
        spec = job.spec
        record.update(
            command=spec.command,
            args=list(spec.args),
            cwd=spec.cwd,
            timeout=spec.timeout,
            options=dict(spec.options),
        )
    if job.pid is not None:
        record["pid"] = job.pid
    if job.is_finished:
        record.update(
            end_reason=job.end_reason.value if job.end_reason else None,
            exit_code=job.exit_code,
            signal=job.signal,
            message=job.message,
            facts=dict(job.facts),
        )
    return record


class AuditPlugin:
    """Writes the audit log. Observes only: it never changes a job or a decision."""

    #: Its ``[plugins.NAME]`` section, for ``worker serve --help`` and ``worker plugins``.
    config_class = AuditConfig

    def __init__(self) -> None:
        self._log: AuditLog | None = None
        self._engine: Engine | None = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._log is None:  # loaded but not configured (``worker plugins`` lists it)
            return
        try:
            self._log.write({"time": _now(), **record})
        except OSError as exc:
            # The hooks that call this must not raise (a disk full must not fail jobs).
            log.error("cannot write the audit log %s: %s", self._log.path, exc)

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        section = config.section("audit", AuditConfig)
        path = Path(section.path).absolute()
        audit_log = AuditLog(path, section.fsync)
        try:
            audit_log.open()  # fail at startup, not at the first event
        except OSError as exc:
            raise ConfigError(
                f"cannot open {str(path)!r}: {exc.strerror} @ $.plugins.audit.path"
            ) from None
        self._log, self._engine = audit_log, engine

    @hookimpl
    def startup(self, engine: Engine) -> None:
        self._write(
            {"event": "startup", "plugins": sorted(name for name, _ in engine.hooks.plugins())}
        )

    @hookimpl
    def shutdown(self) -> None:
        self._write({"event": "shutdown"})
        if self._log is not None:
            self._log.close()

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        self._write(job_record(job, previous))

    @hookimpl(wrapper=True)
    def authorize(
        self, principal: Principal, action: Action, job: Job | None
    ) -> Generator[None, list[bool | None], list[bool | None]]:
        """Wraps every other ``authorize`` implementation and sees all their answers.

        A new-style wrapper (pluggy >= 1.1): ``yield`` returns the list of answers, and what
        the wrapper returns is what the engine gets, so it returns them untouched.
        """
        record: dict[str, Any] = {
            "event": "authorize",
            "principal": principal.name,
            "action": action.value,
            "job": job.id if job is not None else None,
        }
        if job is not None and action is Action.SUBMIT:
            record["command"] = job.spec.command
        try:
            answers = yield
        except Exception as exc:
            self._write({**record, "decision": "error", "error": f"{type(exc).__name__}: {exc}"})
            raise
        record["decision"] = "allow" if self._decision(answers) else "deny"
        record["answers"] = {
            "allow": sum(a is True for a in answers),
            "deny": sum(a is False for a in answers),
            "abstain": sum(a is None for a in answers),
        }
        self._write(record)
        return answers

    def _decision(self, answers: list[bool | None]) -> bool:
        """The engine's rule: any deny wins; with an authorizer loaded, no allow is a deny."""
        if any(a is False for a in answers):
            return False
        if self._engine is not None and self._engine.hooks.has_authorizer():
            return any(a is True for a in answers)
        return True
