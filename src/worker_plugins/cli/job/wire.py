"""The client's side of the wire: job specs out, job records and usage in.

The same conversions as ``worker_plugins.grpc_transport.convert`` (a test holds the two to
the same results), from the library's root alone: ``convert`` serves the server too and
imports the plugin surface (``worker_core.plugin``, with the engine's machinery) and
protobuf's JSON support, which together would add a third to every ``worker job`` command's
start-up. Records from the server are displayed, not trusted to run anything, so they are
read leniently: a state or reason a newer server added shows as PENDING or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker_core import (
    Dependency,
    DependencyKind,
    EndReason,
    IOLimit,
    Isolation,
    Job,
    JobSpec,
    JobState,
    Limits,
    Principal,
    QueueReason,
    Stream,
)
from worker_plugins.grpc_transport import worker_pb2 as pb

# Each model value and its wire twin share a name (JobState.QUEUED, JOB_STATE_QUEUED): a value
# the proto lacks fails here, at import, rather than on some record.
STATE_FROM_PB: Mapping[pb.JobState.ValueType, JobState] = {
    getattr(pb, f"JOB_STATE_{s.name}"): s for s in JobState
}
STATE_TO_PB: Mapping[JobState, pb.JobState.ValueType] = {
    state: value for value, state in STATE_FROM_PB.items()
}
END_REASON_FROM_PB: Mapping[pb.EndReason.ValueType, EndReason] = {
    getattr(pb, f"END_REASON_{r.name}"): r for r in EndReason
}
QUEUE_REASON_FROM_PB: Mapping[pb.QueueReason.ValueType, QueueReason] = {
    getattr(pb, f"QUEUE_REASON_{r.name}"): r for r in QueueReason
}
DEPENDENCY_KIND_TO_PB: Mapping[DependencyKind, pb.DependencyKind.ValueType] = {
    k: getattr(pb, f"DEPENDENCY_KIND_{k.name}") for k in DependencyKind
}
# UNSPECIFIED means OK (the proto says so).
DEPENDENCY_KIND_FROM_PB: Mapping[pb.DependencyKind.ValueType, DependencyKind] = {
    pb.DEPENDENCY_KIND_UNSPECIFIED: DependencyKind.OK,
    **{value: kind for kind, value in DEPENDENCY_KIND_TO_PB.items()},
}
STREAM_TO_PB: Mapping[Stream, pb.Stream.ValueType] = {
    Stream.STDOUT: pb.STREAM_STDOUT,
    Stream.STDERR: pb.STREAM_STDERR,
}
STREAM_FROM_PB: Mapping[pb.Stream.ValueType, Stream] = {
    value: stream for stream, value in STREAM_TO_PB.items()
}


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


# --- out: the spec of a submit ----------------------------------------------------------------


def spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    """The wire form of ``spec``; unset (None) limits stay unset on the wire."""
    limits = spec.limits
    return pb.JobSpec(
        command=spec.command,
        args=list(spec.args),
        env=dict(spec.env),
        cwd=spec.cwd,
        limits=pb.Limits(
            memory_max=limits.memory_max,
            memory_high=limits.memory_high,
            cpu=limits.cpu,
            cpu_weight=limits.cpu_weight,
            io_weight=limits.io_weight,
            io=[
                pb.IOLimit(
                    device=io.device,
                    read_bps=io.read_bps,
                    write_bps=io.write_bps,
                    read_iops=io.read_iops,
                    write_iops=io.write_iops,
                )
                for io in limits.io
            ],
            pids_max=limits.pids_max,
        ),
        isolation=pb.Isolation(uid=spec.isolation.uid, gid=spec.isolation.gid),
        timeout_seconds=spec.timeout,
        options=dict(spec.options),
        name=spec.name,
        labels=dict(spec.labels),
        priority=spec.priority,
        after=[
            pb.Dependency(job_id=d.job_id, kind=DEPENDENCY_KIND_TO_PB[d.kind]) for d in spec.after
        ],
        hold=spec.hold,
        begin_at=spec.begin_at,
    )


# --- in: records --------------------------------------------------------------------------------


def _spec_from_pb(message: pb.JobSpec) -> JobSpec:
    limits = message.limits
    return JobSpec(
        command=message.command,
        args=list(message.args),
        env=dict(message.env),
        cwd=message.cwd or "/",
        limits=Limits(
            memory_max=_optional(limits, "memory_max"),
            memory_high=_optional(limits, "memory_high"),
            cpu=_optional(limits, "cpu"),
            cpu_weight=_optional(limits, "cpu_weight"),
            io_weight=_optional(limits, "io_weight"),
            io=[
                IOLimit(
                    device=io.device,
                    read_bps=_optional(io, "read_bps"),
                    write_bps=_optional(io, "write_bps"),
                    read_iops=_optional(io, "read_iops"),
                    write_iops=_optional(io, "write_iops"),
                )
                for io in limits.io
            ],
            pids_max=_optional(limits, "pids_max"),
        ),
        isolation=Isolation(
            uid=_optional(message.isolation, "uid"), gid=_optional(message.isolation, "gid")
        ),
        timeout=_optional(message, "timeout_seconds"),
        options=dict(message.options),
        name=message.name,
        labels=dict(message.labels),
        priority=message.priority,
        after=[
            Dependency(d.job_id, DEPENDENCY_KIND_FROM_PB.get(d.kind, DependencyKind.OK))
            for d in message.after
        ],
        hold=message.hold,
        begin_at=_optional(message, "begin_at"),
    )


def _value(value: Any) -> Any:
    """A ``google.protobuf.Value`` as Python data (what ``json_format`` would give)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: _value(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None


def _is_int_text(text: str) -> bool:
    return text.removeprefix("-").isdigit()


def _facts(message: pb.Job) -> dict[str, Any]:
    """The facts with their types (``fact_values``), or as text from an older server.

    A protobuf number is a double: where the text form of the same fact is a whole number it
    is used instead, so a byte count stays an exact ``int``.
    """
    texts = dict(message.facts)
    if not message.HasField("fact_values"):
        return texts
    facts: dict[str, Any] = {}
    for key, item in message.fact_values.fields.items():
        value = _value(item)
        text = texts.get(key)
        exact = isinstance(value, float) and text is not None and _is_int_text(text)
        facts[key] = int(text) if exact and text is not None else value
    for key, text in texts.items():
        facts.setdefault(key, text)
    return facts


def job_from_pb(message: pb.Job) -> Job:
    """A :class:`Job` record from the wire, for display."""
    return Job(
        id=message.id,
        owner=Principal(message.owner) if message.owner else None,
        spec=_spec_from_pb(message.spec),
        state=STATE_FROM_PB.get(message.state, JobState.PENDING),
        pid=_optional(message, "pid"),
        exit_code=_optional(message, "exit_code"),
        signal=_optional(message, "signal"),
        end_reason=END_REASON_FROM_PB.get(message.end_reason),
        message=message.message,
        created_at=message.created_at,
        started_at=_optional(message, "started_at"),
        ended_at=_optional(message, "ended_at"),
        queue_reason=QUEUE_REASON_FROM_PB.get(message.queue_reason),
        idempotency_key=message.idempotency_key or None,
        external_id=message.external_id or None,
        facts=_facts(message),
    )


def usage_from_pb(message: pb.Job) -> dict[str, int | float]:
    """A Get answer's live usage of a running or paused job (empty otherwise); whole numbers
    (bytes) as ``int``."""
    if not message.HasField("usage"):
        return {}
    usage: dict[str, int | float] = {}
    for key, item in message.usage.fields.items():
        value = _value(item)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        usage[key] = int(value) if float(value).is_integer() and "seconds" not in key else value
    return usage
