"""``worker.jobs``: one log line per job lifecycle event of the server's engine.

A tiny observer that ``worker serve`` registers on its engine beside the plugins: submitted
(with its owner, command and first state), started (pid), paused, resumed, stopping, released
and ended (reason, exit code or signal, the engine's message), each at INFO, so ``worker -v
serve`` shows them; the step from the queue to the spawn path (PENDING) is DEBUG. JSON lines
carry the fields ``event``, ``job``, ``owner``, ``state``, ``previous`` and, where they
apply, ``command``, ``pid``, ``reason``, ``exit_code``, ``signal``, ``detail`` (the engine's
message on the ended job).
"""

from __future__ import annotations

import logging
from typing import Any

from worker_core.plugin import EndReason, Job, JobState, hookimpl

log = logging.getLogger("worker.jobs")

#: What a move into each state is called in the log (``submitted`` is any first state).
_EVENTS = {
    JobState.QUEUED: "queued",
    JobState.HELD: "held",
    JobState.PENDING: "admitted",
    JobState.RUNNING: "started",
    JobState.PAUSED: "paused",
    JobState.STOPPING: "stopping",
    JobState.ENDED: "ended",
}

#: A job's command is the caller's input: cut to this many characters in a line.
MAX_COMMAND_CHARS = 200


def _printable(text: str) -> str:
    # One line of printable ASCII: a command must not write a line of its own into the log.
    if not (text.isascii() and text.isprintable()):
        text = ascii(text)[1:-1]
    return text if len(text) <= MAX_COMMAND_CHARS else text[: MAX_COMMAND_CHARS - 3] + "..."


def _event(job: Job, previous: JobState | None) -> str:
    if previous is None:
        return "submitted"
    if job.state is JobState.RUNNING and previous is JobState.PAUSED:
        return "resumed"
    if job.state is JobState.QUEUED and previous is JobState.HELD:
        return "released"
    return _EVENTS[job.state]


def _ending(job: Job) -> tuple[str, dict[str, Any]]:
    reason = job.end_reason.value if job.end_reason is not None else "unknown"
    words = [reason]
    if job.exit_code is not None:
        words.append(f"exit code {job.exit_code}")
    if job.signal is not None:
        words.append(f"signal {job.signal}")
    text = ", ".join(words)
    fields: dict[str, Any] = {"reason": reason, "exit_code": job.exit_code, "signal": job.signal}
    if job.message:
        fields["detail"] = job.message
        # "exited with code 3" says nothing the words above do not; why a job failed to
        # start, was lost or stopped does.
        if job.end_reason is not EndReason.EXITED:
            text += f": {_printable(job.message)}"
    return text, fields


class JobLog:
    """Logs every state change of the engine's jobs on ``worker.jobs`` (see the module)."""

    #: Its name among the engine's plugins.
    name = "serve.job-log"

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        # An engine thread, after the change was stored: a record and nothing else.
        event = _event(job, previous)
        # Leaving the queue for the spawn path is an engine detail; a submit straight into
        # PENDING (nothing queued ahead) is still "submitted".
        level = logging.DEBUG if event == "admitted" else logging.INFO
        if not log.isEnabledFor(level):
            return
        owner = job.owner_name
        fields: dict[str, Any] = {
            "event": event,
            "job": job.id,
            "owner": owner,
            "state": job.state.value,
            "previous": previous.value if previous is not None else None,
        }
        if previous is None:
            command = _printable(job.spec.command)
            fields["command"] = command
            who = _printable(owner) if owner is not None else "-"
            detail = f" by {who}: {command} ({job.state.value})"
        elif job.state is JobState.RUNNING:
            fields["pid"] = job.pid
            detail = f" (pid {job.pid})" if job.pid is not None else ""
        elif job.state is JobState.ENDED:
            text, ending = _ending(job)
            fields.update(ending)
            detail = f": {text}"
        else:
            detail = ""
        log.log(level, "job %s %s%s", job.id, event, detail, extra=fields)
