"""The client's side of the wire: job specs out, jobs and usage in.

Jobs come in as :class:`~.view.JobView` tuples (:func:`view_from_pb`), which is all a command
prints; :func:`job_from_pb` makes the library's record of one (for ``--json``), importing
the model only then. The same conversions as ``worker_plugins.grpc_transport.convert`` (a
test holds the two to the same results), without its imports: ``convert`` serves the server
too and imports the plugin surface (``worker_core.plugin``, with the engine's machinery) and
protobuf's JSON support, and the model's attrs classes alone would add a tenth to every
``worker job`` command's start-up. Records from the server are displayed, not trusted to
run anything, so they are read leniently: a state or reason a newer server added shows as
``pending`` or None.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from worker_plugins.grpc_transport import worker_pb2 as pb

from .view import (
    DEPENDENCY_KINDS,
    END_REASONS,
    QUEUE_REASONS,
    STATES,
    DependencyKindWord,
    DependencyView,
    EndReasonWord,
    IOLimitView,
    IsolationView,
    JobView,
    LimitsView,
    QueueReasonWord,
    SpecView,
    State,
    record_of,
)

if TYPE_CHECKING:
    from worker_core import Job, JobSpec, Stream

W = TypeVar("W", bound=str)


def _from_pb(prefix: str, words: tuple[W, ...]) -> dict[int, W]:
    """Each of ``words`` by the value of its wire twin, named ``PREFIX_WORD`` (a word the
    proto lacks fails here, at import, rather than on some record)."""
    return {getattr(pb, f"{prefix}_{word.upper()}"): word for word in words}


STATE_FROM_PB: Mapping[int, State] = _from_pb("JOB_STATE", STATES)
STATE_TO_PB: Mapping[State, pb.JobState.ValueType] = {
    state: pb.JobState.ValueType(value) for value, state in STATE_FROM_PB.items()
}
END_REASON_FROM_PB: Mapping[int, EndReasonWord] = _from_pb("END_REASON", END_REASONS)
QUEUE_REASON_FROM_PB: Mapping[int, QueueReasonWord] = _from_pb("QUEUE_REASON", QUEUE_REASONS)
DEPENDENCY_KIND_TO_PB: Mapping[DependencyKindWord, pb.DependencyKind.ValueType] = {
    kind: pb.DependencyKind.ValueType(value)
    for value, kind in _from_pb("DEPENDENCY_KIND", DEPENDENCY_KINDS).items()
}
# UNSPECIFIED means OK (the proto says so).
DEPENDENCY_KIND_FROM_PB: Mapping[int, DependencyKindWord] = {
    pb.DEPENDENCY_KIND_UNSPECIFIED: "ok",
    **{value: kind for kind, value in DEPENDENCY_KIND_TO_PB.items()},
}


@functools.cache
def stream_to_pb() -> Mapping[Stream, pb.Stream.ValueType]:
    """The wire value of each output stream (``tail`` only: the streams are the engine's
    enum, imported when first asked for)."""
    from worker_core import Stream

    return {Stream.STDOUT: pb.STREAM_STDOUT, Stream.STDERR: pb.STREAM_STDERR}


@functools.cache
def stream_from_pb() -> Mapping[int, Stream]:
    return {value: stream for stream, value in stream_to_pb().items()}


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
            pb.Dependency(job_id=d.job_id, kind=DEPENDENCY_KIND_TO_PB[d.kind.value])
            for d in spec.after
        ],
        hold=spec.hold,
        begin_at=spec.begin_at,
    )


# --- in: jobs -----------------------------------------------------------------------------------


def _sorted(entries: Mapping[str, str]) -> dict[str, str]:
    """A protobuf map as a dict sorted by key: the map's own order differs from one process
    to the next, and ``--json`` prints the order it has."""
    return dict(sorted(entries.items()))


def _spec_from_pb(message: pb.JobSpec) -> SpecView:
    limits = message.limits
    return SpecView(
        command=message.command,
        args=tuple(message.args),
        env=_sorted(message.env),
        cwd=message.cwd or "/",
        limits=LimitsView(
            memory_max=_optional(limits, "memory_max"),
            memory_high=_optional(limits, "memory_high"),
            cpu=_optional(limits, "cpu"),
            cpu_weight=_optional(limits, "cpu_weight"),
            io_weight=_optional(limits, "io_weight"),
            io=tuple(
                IOLimitView(
                    device=io.device,
                    read_bps=_optional(io, "read_bps"),
                    write_bps=_optional(io, "write_bps"),
                    read_iops=_optional(io, "read_iops"),
                    write_iops=_optional(io, "write_iops"),
                )
                for io in limits.io
            ),
            pids_max=_optional(limits, "pids_max"),
        ),
        isolation=IsolationView(
            uid=_optional(message.isolation, "uid"), gid=_optional(message.isolation, "gid")
        ),
        timeout=_optional(message, "timeout_seconds"),
        options=_sorted(message.options),
        name=message.name,
        labels=_sorted(message.labels),
        priority=message.priority,
        after=tuple(
            DependencyView(d.job_id, DEPENDENCY_KIND_FROM_PB.get(d.kind, "ok"))
            for d in message.after
        ),
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
    is used instead, so a byte count stays an exact ``int``. Sorted by key, as every map here
    (see :func:`_sorted`).
    """
    texts = _sorted(message.facts)
    if not message.HasField("fact_values"):
        return texts
    facts: dict[str, Any] = {}
    for key, item in sorted(message.fact_values.fields.items()):
        value = _value(item)
        text = texts.get(key)
        exact = isinstance(value, float) and text is not None and _is_int_text(text)
        facts[key] = int(text) if exact and text is not None else value
    for key, text in texts.items():
        facts.setdefault(key, text)
    return dict(sorted(facts.items()))


def view_from_pb(message: pb.Job) -> JobView:
    """The job a message describes, for display."""
    return JobView(
        id=message.id,
        owner_name=message.owner or None,
        spec=_spec_from_pb(message.spec),
        state=STATE_FROM_PB.get(message.state, "pending"),
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


def job_from_pb(message: pb.Job) -> Job:
    """The library's :class:`~worker_core.Job` record of a message (imports the model)."""
    return record_of(view_from_pb(message))


def usage_from_pb(message: pb.Job) -> dict[str, int | float]:
    """A Get answer's live usage of a running or paused job (empty otherwise); whole numbers
    (bytes) as ``int``."""
    if not message.HasField("usage"):
        return {}
    usage: dict[str, int | float] = {}
    for key, item in sorted(message.usage.fields.items()):  # a map's order is arbitrary
        value = _value(item)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        usage[key] = int(value) if float(value).is_integer() and "seconds" not in key else value
    return usage
