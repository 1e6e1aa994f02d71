"""What a human (or a script, with ``--json``) reads about jobs.

Plain functions from model records to text, so the commands stay free of formatting and the
formats can be tested without a server.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from worker_core.plugin import EndReason, Job, JobSpec, JobState
from worker_plugins.grpc_transport.convert import fact_to_str

#: Longest command shown in a ``list`` row; the full one is in ``get`` and ``--json``.
COMMAND_WIDTH = 60
#: Longest name and labels shown in a ``list`` row.
NAME_WIDTH = 24
LABELS_WIDTH = 40


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def command_line(spec: JobSpec) -> str:
    """The command as a shell would need it typed."""
    return shlex.join([spec.command, *spec.args])


def duration(seconds: float) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``: short and roughly constant width."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def run_time(job: Job, now: float) -> float | None:
    """How long the job ran (or has been running); None if it never started."""
    if job.started_at is None:
        return None
    return (job.ended_at or now) - job.started_at


def outcome(job: Job) -> str:
    """How the job ended, in words; ``""`` while it runs."""
    if not job.is_finished:
        return ""
    reason = job.end_reason
    if reason is EndReason.EXITED:
        if job.exit_code is not None:
            return f"exited with code {job.exit_code}"
        if job.signal is not None:
            return f"killed by {signal_name(job.signal)}"
    by = f" ({signal_name(job.signal)})" if job.signal is not None else ""
    if reason is EndReason.STOPPED:
        return f"stopped on request{by}"
    if reason is EndReason.TIMED_OUT:
        limit = f" its {job.spec.timeout:g}s" if job.spec.timeout else " its"
        return f"timed out: ran past{limit} time limit{by}"
    if reason is EndReason.OOM_KILLED:
        return "killed by the OOM killer (memory limit reached)"
    if reason is EndReason.FAILED_TO_START:
        return f"failed to start: {job.message}" if job.message else "failed to start"
    if reason is EndReason.LOST:
        return f"lost: {job.message}" if job.message else "lost"
    if reason is EndReason.SHUTDOWN:
        detail = f"{job.message}{by}" if job.message else f"the server shut down while it ran{by}"
        return f"ended by the server's shutdown: {detail}"
    if reason is EndReason.DEPENDENCY_FAILED:
        return f"never ran: {job.message}" if job.message else "never ran: a dependency failed"
    return job.message or "ended"


def state_word(job: Job) -> str:
    """One word for the state column: the end reason once ended."""
    if job.is_finished and job.end_reason is not None:
        return job.end_reason.value
    return job.state.value


def exit_word(job: Job) -> str:
    if job.exit_code is not None:
        return str(job.exit_code)
    if job.signal is not None:
        return signal_name(job.signal)
    return "-"


def status_line(job: Job) -> str:
    """``<id> <state>: <details>``, e.g. ``7f3a… ended: stopped on request (SIGTERM)``."""
    if job.is_finished:
        return f"{job.id} ended: {outcome(job)}"
    pid = f" (pid {job.pid})" if job.pid is not None else ""
    return f"{job.id} {job.state.value}{pid}"


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "-"
    stamp = datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
    if timestamp > now:  # a begin time still to come
        return f"{stamp} (in {duration(timestamp - now)})"
    return f"{stamp} ({duration(now - timestamp)} ago)"


def _limits(spec: JobSpec) -> list[str]:
    limits, isolation = spec.limits, spec.isolation
    parts = [
        f"{label} {value}"
        for label, value in (
            ("memory", limits.memory_max),
            ("memory-high", limits.memory_high),
            ("cpus", limits.cpu),
            ("cpu-weight", limits.cpu_weight),
            ("io-weight", limits.io_weight),
            ("pids", limits.pids_max),
            ("uid", isolation.uid),
            ("gid", isolation.gid),
            ("timeout", f"{spec.timeout:g}s" if spec.timeout else None),
        )
        if value is not None
    ]
    for io in limits.io:
        caps = [
            f"{name.replace('_', '-')}={getattr(io, name)}"
            for name in ("read_bps", "write_bps", "read_iops", "write_iops")
            if getattr(io, name) is not None
        ]
        parts.append(f"io {io.device} {' '.join(caps)}")
    return parts


def job_summary(job: Job, now: float | None = None) -> str:
    """The ``get`` view: one ``label: value`` per line, facts indented at the end."""
    now = time.time() if now is None else now
    spec = job.spec
    rows: list[tuple[str, str]] = [("id", job.id)]
    if spec.name:
        rows.append(("name", spec.name))
    if spec.labels:
        rows.append(("labels", labels_text(spec.labels)))
    rows += [
        ("owner", job.owner_name or "-"),
        ("command", command_line(spec)),
        ("state", job.state.value),
    ]
    if job.queue_reason is not None:
        rows.append(("waiting for", job.queue_reason.value))
    if job.is_finished:
        rows.append(("outcome", outcome(job)))
        rows.append(("exit code", str(job.exit_code) if job.exit_code is not None else "-"))
        if job.signal is not None:
            rows.append(("signal", f"{job.signal} ({signal_name(job.signal)})"))
    rows.append(("pid", str(job.pid) if job.pid is not None else "-"))
    rows.append(("created", _when(job.created_at, now)))
    rows.append(("started", _when(job.started_at, now)))
    if job.is_finished:
        rows.append(("finished", _when(job.ended_at, now)))
    ran = run_time(job, now)
    if ran is not None:
        rows.append(("ran for" if job.is_finished else "running for", duration(ran)))
    if job.spec.cwd != "/":
        rows.append(("cwd", job.spec.cwd))
    limits = _limits(job.spec)
    if limits:
        rows.append(("limits", ", ".join(limits)))
    if job.spec.options:
        rows.append(("options", ", ".join(f"{k}={v}" for k, v in sorted(job.spec.options.items()))))
    rows.extend(_scheduling(spec, now))
    if job.idempotency_key:
        rows.append(("idempotency key", job.idempotency_key))
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"{label + ':':<{width}} {value}" for label, value in rows]
    if job.facts:
        lines.append("facts:")
        lines.extend(f"  {key}: {fact_to_str(value)}" for key, value in sorted(job.facts.items()))
    return "\n".join(lines)


def _scheduling(spec: JobSpec, now: float) -> list[tuple[str, str]]:
    rows = []
    if spec.priority:
        rows.append(("priority", str(spec.priority)))
    if spec.after:
        rows.append(("after", ", ".join(f"{d.job_id} ({d.kind.value})" for d in spec.after)))
    if spec.hold:
        rows.append(("hold", "yes (starts once released)"))
    if spec.begin_at is not None:
        rows.append(("not before", _when(spec.begin_at, now)))
    return rows


def labels_text(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2``, sorted by key."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows
    )


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def job_table(jobs: Iterable[Job], now: float | None = None) -> str:
    """The ``list`` view, oldest first: ID NAME OWNER STATE EXIT AGE TIME LABELS COMMAND."""
    now = time.time() if now is None else now
    rows = []
    for job in sorted(jobs, key=lambda j: j.created_at):
        ran = run_time(job, now)
        rows.append(
            [
                job.id,
                _cut(job.spec.name, NAME_WIDTH) or "-",
                job.owner_name or "-",
                state_word(job),
                exit_word(job),
                duration(now - job.created_at),
                duration(ran) if ran is not None else "-",
                _cut(labels_text(job.spec.labels), LABELS_WIDTH) or "-",
                _cut(command_line(job.spec), COMMAND_WIDTH),
            ]
        )
    header = ["ID", "NAME", "OWNER", "STATE", "EXIT", "AGE", "TIME", "LABELS", "COMMAND"]
    return table(header, rows)


def job_dict(job: Job) -> dict[str, Any]:
    """A job as JSON-ready data: stable snake_case keys, enums as their lower-case values."""
    spec = job.spec
    limits = spec.limits
    return {
        "id": job.id,
        "name": spec.name,
        "labels": dict(spec.labels),
        "owner": job.owner_name,
        "command": spec.command,
        "args": list(spec.args),
        "state": job.state.value,
        "queue_reason": job.queue_reason.value if job.queue_reason else None,
        "end_reason": job.end_reason.value if job.end_reason else None,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "pid": job.pid,
        "message": job.message,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "idempotency_key": job.idempotency_key,
        "facts": dict(job.facts),
        "spec": {
            "env": dict(spec.env),
            "cwd": spec.cwd,
            "timeout": spec.timeout,
            "limits": {
                "memory_max": limits.memory_max,
                "memory_high": limits.memory_high,
                "cpu": limits.cpu,
                "cpu_weight": limits.cpu_weight,
                "io_weight": limits.io_weight,
                "pids_max": limits.pids_max,
                "io": [
                    {
                        "device": io.device,
                        "read_bps": io.read_bps,
                        "write_bps": io.write_bps,
                        "read_iops": io.read_iops,
                        "write_iops": io.write_iops,
                    }
                    for io in limits.io
                ],
            },
            "isolation": {"uid": spec.isolation.uid, "gid": spec.isolation.gid},
            "options": dict(spec.options),
            "priority": spec.priority,
            "after": [{"job_id": d.job_id, "kind": d.kind.value} for d in spec.after],
            "hold": spec.hold,
            "begin_at": spec.begin_at,
        },
    }


#: Job states a user may filter ``list`` on, by their command-line name.
STATE_NAMES = {state.value: state for state in JobState}
