"""What a human (or a script, with ``--json``) reads about jobs.

Plain functions from jobs (:class:`~.view.JobView`: the library record's fields, enums as
their words) to text, so the commands stay free of formatting and the formats can be tested
without a server. Sizes are in binary units (``64 MiB``), lengths of
time are durations (``1m12s``), times are local with their offset; ``--json`` is the
library's own record shape (:func:`worker_core.job_to_dict`), numbers as numbers.

One vocabulary of states (:data:`STATE_WORDS`): what ``list`` and ``get`` show in STATE is
what ``list --state`` accepts. A job that has not ended shows its state (``queued``,
``running``...); one that has ended shows how (``exited``, ``timed_out``...), and ``ended``
chooses every ended job.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .view import END_REASONS, STATES, JobView, QueueReasonWord, SpecView, State, record_of

#: Longest command shown in a ``list`` row; the full one is in ``get`` and ``--json``.
COMMAND_WIDTH = 60
#: Longest name and labels shown in a ``list`` row.
NAME_WIDTH = 24
LABELS_WIDTH = 40

#: The states of a job that has not ended, then how a job ended, then ``ended`` (any end).
STATE_WORDS: tuple[str, ...] = (
    *(state for state in STATES if state != "ended"),
    *END_REASONS,
    "ended",
)

#: Why a queued job waits, in words (``get``); ``list`` shows the reason's own name.
QUEUE_REASON_TEXT: Mapping[QueueReasonWord, str] = {
    "priority": "jobs ahead of it start first",
    "resources": "the memory or CPU budget is in use",
    "running_cap": "the server's cap on running jobs is reached",
    "owner_cap": "its owner's cap on running jobs is reached",
    "dependency": "a job it depends on has not ended",
    "begin_time": "its begin time has not come",
    "plugin": "a plugin delays it",
}


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def command_line(spec: SpecView) -> str:
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


def seconds_text(seconds: float) -> str:
    """A limit or setting in seconds as it would be typed: ``30s``, ``1m30s``, ``1h``."""
    if seconds < 60 or seconds % 1:
        return f"{seconds:g}s"
    parts = []
    rest = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def size(count: float) -> str:
    """Bytes in binary units: ``512 B``, ``64 MiB``, ``1.5 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}".replace(".0 ", " ")
        value /= 1024
    raise AssertionError("unreachable")


def measure(key: str, value: Any) -> str:
    """A fact or usage value with its unit, guessed from the key the way plugins name them
    (``memory_peak``: bytes; ``cpu_seconds``: a duration); anything else as it is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if key.endswith("_seconds"):
            return duration(value)
        if key.startswith("memory") or key.endswith("_bytes"):
            return size(value)
        return f"{value:g}" if isinstance(value, float) else str(value)
    return str(value)


def run_time(job: JobView, now: float) -> float | None:
    """How long the job ran (or has been running); None if it never started."""
    if job.started_at is None:
        return None
    return (job.ended_at or now) - job.started_at


def outcome(job: JobView) -> str:
    """How the job ended, in words; ``""`` while it runs."""
    if not job.is_finished:
        return ""
    reason = job.end_reason
    if reason == "exited":
        if job.exit_code is not None:
            return f"exited with code {job.exit_code}"
        if job.signal is not None:
            return f"killed by {signal_name(job.signal)}"
    by = f" ({signal_name(job.signal)})" if job.signal is not None else ""
    if reason == "stopped":
        return f"stopped on request{by}"
    if reason == "timed_out":
        limit = f" its {seconds_text(job.spec.timeout)}" if job.spec.timeout else " its"
        return f"timed out: ran past{limit} time limit{by}"
    if reason == "oom_killed":
        return "killed by the OOM killer (memory limit reached)"
    if reason == "failed_to_start":
        return f"failed to start: {job.message}" if job.message else "failed to start"
    if reason == "lost":
        return f"lost: {job.message}" if job.message else "lost"
    if reason == "shutdown":
        detail = f"{job.message}{by}" if job.message else f"the server shut down while it ran{by}"
        return f"ended by the server's shutdown: {detail}"
    if reason == "dependency_failed":
        return f"never ran: {job.message}" if job.message else "never ran: a dependency failed"
    return job.message or "ended"


def state_word(job: JobView) -> str:
    """The job's word of :data:`STATE_WORDS`: its state, or how it ended once it has."""
    if job.is_finished and job.end_reason is not None:
        return job.end_reason
    return job.state


def matches_state(job: JobView, words: Collection[str]) -> bool:
    """Whether ``job`` is in one of ``words`` (of :data:`STATE_WORDS`); any job for none."""
    return not words or state_word(job) in words or (job.is_finished and "ended" in words)


def server_states(words: Iterable[str]) -> set[State]:
    """The record states the server filters on for ``words`` (an end reason: ``ended``)."""
    known: dict[str, State] = {state: state for state in STATES}
    return {known.get(word, "ended") for word in words}


def exit_word(job: JobView) -> str:
    if job.exit_code is not None:
        return str(job.exit_code)
    if job.signal is not None:
        return signal_name(job.signal)
    return "-"


def reason_word(job: JobView) -> str:
    """The REASON column: why a queued job waits (as squeue's); ``-`` for any other."""
    if job.state == "queued" and job.queue_reason is not None:
        return job.queue_reason
    return "-"


def status_line(job: JobView) -> str:
    """``<id> <state>: <details>``, e.g. ``7f3a… ended: stopped on request (SIGTERM)``."""
    if job.is_finished:
        return f"{job.id} ended: {outcome(job)}"
    if job.state == "queued" and job.queue_reason is not None:
        return f"{job.id} queued: {QUEUE_REASON_TEXT.get(job.queue_reason, job.queue_reason)}"
    pid = f" (pid {job.pid})" if job.pid is not None else ""
    return f"{job.id} {job.state}{pid}"


def local_time(timestamp: float) -> str:
    """``2024-05-01T14:03:07+02:00``: this machine's time zone, with its offset."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "-"
    if timestamp > now:  # a begin time still to come
        return f"{local_time(timestamp)} (in {duration(timestamp - now)})"
    return f"{local_time(timestamp)} ({duration(now - timestamp)} ago)"


def _limits(spec: SpecView) -> list[str]:
    limits, isolation = spec.limits, spec.isolation
    parts = [
        f"{label} {value}"
        for label, value in (
            ("memory", size(limits.memory_max) if limits.memory_max is not None else None),
            ("memory-high", size(limits.memory_high) if limits.memory_high is not None else None),
            ("cpus", f"{limits.cpu:g}" if limits.cpu is not None else None),
            ("cpu-weight", limits.cpu_weight),
            ("io-weight", limits.io_weight),
            ("pids", limits.pids_max),
            ("uid", isolation.uid),
            ("gid", isolation.gid),
            ("timeout", seconds_text(spec.timeout) if spec.timeout else None),
        )
        if value is not None
    ]
    for io in limits.io:
        caps = [
            f"{label} {size(value)}/s" if "bps" in name else f"{label} {value}/s"
            for name, label in (
                ("read_bps", "read"),
                ("write_bps", "write"),
                ("read_iops", "read ops"),
                ("write_iops", "write ops"),
            )
            if (value := getattr(io, name)) is not None
        ]
        parts.append(f"io {io.device}: {', '.join(caps)}")
    return parts


def job_summary(
    job: JobView, usage: Mapping[str, int | float] | None = None, now: float | None = None
) -> str:
    """The ``get`` view: one ``label: value`` per line; usage and facts indented at the end."""
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
        ("state", state_word(job)),
    ]
    if job.state == "queued" and job.queue_reason is not None:
        text = QUEUE_REASON_TEXT.get(job.queue_reason, "")
        rows.append(("reason", f"{job.queue_reason} ({text})" if text else job.queue_reason))
    elif job.state == "held":
        rows.append(("reason", f"held (`worker job release {job.id}` lets it start)"))
    if job.is_finished:
        rows.append(("outcome", outcome(job)))
        rows.append(("exit code", str(job.exit_code) if job.exit_code is not None else "-"))
        if job.signal is not None:
            rows.append(("signal", f"{job.signal} ({signal_name(job.signal)})"))
    rows.append(("pid", str(job.pid) if job.pid is not None else "-"))
    if job.external_id:
        rows.append(("external id", job.external_id))
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
    for title, values in (("usage now", usage or {}), ("facts", job.facts)):
        if values:
            lines.append(f"{title}:")
            lines.extend(f"  {key}: {measure(key, value)}" for key, value in sorted(values.items()))
    return "\n".join(lines)


def _scheduling(spec: SpecView, now: float) -> list[tuple[str, str]]:
    rows = []
    if spec.priority:
        rows.append(("priority", str(spec.priority)))
    if spec.after:
        rows.append(("after", ", ".join(f"{d.job_id} ({d.kind})" for d in spec.after)))
    if spec.hold:
        rows.append(("hold", "yes (submitted held)"))
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


#: The columns of ``list``.
TABLE_HEADER = (
    "ID",
    "NAME",
    "OWNER",
    "STATE",
    "REASON",
    "EXIT",
    "AGE",
    "TIME",
    "LABELS",
    "COMMAND",
)


def job_table(jobs: Iterable[JobView], now: float | None = None) -> str:
    """The ``list`` view, oldest first (:data:`TABLE_HEADER`); only the header for none."""
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
                reason_word(job),
                exit_word(job),
                duration(now - job.created_at),
                duration(ran) if ran is not None else "-",
                _cut(labels_text(job.spec.labels), LABELS_WIDTH) or "-",
                _cut(command_line(job.spec), COMMAND_WIDTH),
            ]
        )
    return table(TABLE_HEADER, rows)


def job_dict(job: JobView, usage: Mapping[str, int | float] | None = None) -> dict[str, Any]:
    """A job as JSON-ready data: the library's record (:func:`worker_core.job_to_dict`), and
    for a running or paused job, what it uses now under ``usage``."""
    # Imported here: the record and its converter (attrs, cattrs) are only needed for --json.
    from worker_core import job_to_dict

    data = job_to_dict(record_of(job))
    if usage:
        data["usage"] = dict(usage)
    return data
