"""Conversions between the job model (:mod:`worker_core`) and the wire messages (``worker_pb2``).

One module both ends share: the server turns requests into specs and records into messages,
the client (``worker job``) turns messages back into :class:`~worker_core.Job` records for
display. Input from the wire is untrusted: :func:`spec_from_pb` refuses anything the model
cannot hold with :class:`~worker_core.InvalidSpec` naming the field, so the server
answers INVALID_ARGUMENT rather than failing somewhere deeper.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from worker_core.plugin import (
    BOTH_STREAMS,
    Dependency,
    DependencyKind,
    EndReason,
    InvalidSpec,
    IOLimit,
    Isolation,
    Job,
    JobQuery,
    JobSpec,
    JobState,
    Limits,
    Principal,
    QueueReason,
    StartAt,
    StartPosition,
    Stream,
)

from . import worker_pb2 as pb

#: The largest integer limit accepted: cgroup files take signed 64-bit values, and an
#: unsigned wire value above this would be misread as negative by the kernel.
MAX_INT_LIMIT = (1 << 63) - 1

# ---------------------------------------------------------------------------------------------
# enum tables (both directions); UNSPECIFIED never maps to a model value
# ---------------------------------------------------------------------------------------------

STREAM_TO_PB: Mapping[Stream, pb.Stream.ValueType] = {
    Stream.STDOUT: pb.STREAM_STDOUT,
    Stream.STDERR: pb.STREAM_STDERR,
}
STREAM_FROM_PB: Mapping[pb.Stream.ValueType, Stream] = {v: k for k, v in STREAM_TO_PB.items()}

STATE_TO_PB: Mapping[JobState, pb.JobState.ValueType] = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.HELD: pb.JOB_STATE_HELD,
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.PAUSED: pb.JOB_STATE_PAUSED,
    JobState.STOPPING: pb.JOB_STATE_STOPPING,
    JobState.ENDED: pb.JOB_STATE_ENDED,
}
STATE_FROM_PB: Mapping[pb.JobState.ValueType, JobState] = {v: k for k, v in STATE_TO_PB.items()}

END_REASON_TO_PB: Mapping[EndReason, pb.EndReason.ValueType] = {
    EndReason.EXITED: pb.END_REASON_EXITED,
    EndReason.STOPPED: pb.END_REASON_STOPPED,
    EndReason.OOM_KILLED: pb.END_REASON_OOM_KILLED,
    EndReason.TIMED_OUT: pb.END_REASON_TIMED_OUT,
    EndReason.FAILED_TO_START: pb.END_REASON_FAILED_TO_START,
    EndReason.LOST: pb.END_REASON_LOST,
    EndReason.SHUTDOWN: pb.END_REASON_SHUTDOWN,
    EndReason.DEPENDENCY_FAILED: pb.END_REASON_DEPENDENCY_FAILED,
}
END_REASON_FROM_PB: Mapping[pb.EndReason.ValueType, EndReason] = {
    v: k for k, v in END_REASON_TO_PB.items()
}

QUEUE_REASON_TO_PB: Mapping[QueueReason, pb.QueueReason.ValueType] = {
    QueueReason.PRIORITY: pb.QUEUE_REASON_PRIORITY,
    QueueReason.RESOURCES: pb.QUEUE_REASON_RESOURCES,
    QueueReason.RUNNING_CAP: pb.QUEUE_REASON_RUNNING_CAP,
    QueueReason.OWNER_CAP: pb.QUEUE_REASON_OWNER_CAP,
    QueueReason.DEPENDENCY: pb.QUEUE_REASON_DEPENDENCY,
    QueueReason.BEGIN_TIME: pb.QUEUE_REASON_BEGIN_TIME,
    QueueReason.PLUGIN: pb.QUEUE_REASON_PLUGIN,
}
QUEUE_REASON_FROM_PB: Mapping[pb.QueueReason.ValueType, QueueReason] = {
    v: k for k, v in QUEUE_REASON_TO_PB.items()
}

# UNSPECIFIED means OK on the way in (the proto says so): the common case needs no field.
DEPENDENCY_KIND_TO_PB: Mapping[DependencyKind, pb.DependencyKind.ValueType] = {
    DependencyKind.OK: pb.DEPENDENCY_KIND_OK,
    DependencyKind.ANY: pb.DEPENDENCY_KIND_ANY,
    DependencyKind.FAILED: pb.DEPENDENCY_KIND_FAILED,
}
DEPENDENCY_KIND_FROM_PB: Mapping[pb.DependencyKind.ValueType, DependencyKind] = {
    pb.DEPENDENCY_KIND_UNSPECIFIED: DependencyKind.OK,
    **{v: k for k, v in DEPENDENCY_KIND_TO_PB.items()},
}


# ---------------------------------------------------------------------------------------------
# JobSpec
# ---------------------------------------------------------------------------------------------


def _text(field: str, value: str) -> str:
    # Protobuf guarantees valid UTF-8 but not the absence of NUL, which no exec argument,
    # environment entry or path can carry.
    if "\0" in value:
        raise InvalidSpec(field, "contains a NUL byte")
    return value


def _int_limit(field: str, message: Any, name: str) -> int | None:
    if not message.HasField(name):
        return None
    value: int = getattr(message, name)
    if value > MAX_INT_LIMIT:
        raise InvalidSpec(field, f"must be at most {MAX_INT_LIMIT}, got {value}")
    return value  # 0 is refused by the model's validators ("must be positive")


def _number(field: str, message: Any, name: str) -> float | None:
    if not message.HasField(name):
        return None
    value: float = getattr(message, name)
    if not math.isfinite(value) or value <= 0:
        raise InvalidSpec(field, f"must be a positive finite number, got {value}")
    return value


def _timestamp(field: str, message: Any, name: str) -> float | None:
    """An optional time in seconds since the epoch: finite and not before 1970."""
    if not message.HasField(name):
        return None
    value: float = getattr(message, name)
    if not math.isfinite(value) or value < 0:
        raise InvalidSpec(field, f"must be a time in seconds since the epoch, got {value}")
    return value


def _io_from_pb(i: int, io: pb.IOLimit) -> IOLimit:
    prefix = f"limits.io[{i}]"
    device = _text(f"{prefix}.device", io.device)
    if not device:
        raise InvalidSpec(f"{prefix}.device", "must name a block device or MAJ:MIN")
    return IOLimit(
        device=device,
        read_bps=_int_limit(f"{prefix}.read_bps", io, "read_bps"),
        write_bps=_int_limit(f"{prefix}.write_bps", io, "write_bps"),
        read_iops=_int_limit(f"{prefix}.read_iops", io, "read_iops"),
        write_iops=_int_limit(f"{prefix}.write_iops", io, "write_iops"),
    )


def _limits_from_pb(limits: pb.Limits) -> Limits:
    return Limits(
        memory_max=_int_limit("limits.memory_max", limits, "memory_max"),
        memory_high=_int_limit("limits.memory_high", limits, "memory_high"),
        cpu=_number("limits.cpu", limits, "cpu"),
        cpu_weight=_int_limit("limits.cpu_weight", limits, "cpu_weight"),
        io_weight=_int_limit("limits.io_weight", limits, "io_weight"),
        io=[_io_from_pb(i, io) for i, io in enumerate(limits.io)],
        pids_max=_int_limit("limits.pids_max", limits, "pids_max"),
    )


def _isolation_from_pb(isolation: pb.Isolation) -> Isolation:
    return Isolation(
        uid=isolation.uid if isolation.HasField("uid") else None,
        gid=isolation.gid if isolation.HasField("gid") else None,
    )


#: What a spec without ``limits`` or ``isolation`` gets (the model's values are immutable,
#: so every such spec can share them rather than build and validate its own).
_NO_LIMITS = Limits()
_NO_ISOLATION = Isolation()


def _texts(field: str, values: Iterable[str]) -> list[str]:
    """Repeated text, each checked by :func:`_text`; the field named with the index of the
    first bad one (only then is a name made)."""
    texts = list(values)
    for i, text in enumerate(texts):
        if "\0" in text:
            _text(f"{field}[{i}]", text)
    return texts


def _str_map(field: str, values: Mapping[str, str]) -> dict[str, str]:
    result = dict(values)
    for key, value in result.items():
        if "\0" in key or "\0" in value:
            _text(f"{field}[{key!r}]", key)
            _text(f"{field}[{key!r}]", value)
    return result


def _dependency_from_pb(i: int, dependency: pb.Dependency) -> Dependency:
    job_id = _text(f"after[{i}].job_id", dependency.job_id)
    if not job_id:
        raise InvalidSpec(f"after[{i}].job_id", "must name a job")
    kind = DEPENDENCY_KIND_FROM_PB.get(dependency.kind)
    if kind is None:
        raise InvalidSpec(f"after[{i}].kind", f"unknown dependency kind {dependency.kind}")
    return Dependency(job_id=job_id, kind=kind)


def spec_from_pb(message: pb.JobSpec) -> JobSpec:
    """A :class:`JobSpec` from a request; :class:`InvalidSpec` naming the field if malformed.

    The engine validates further at submit (the command exists, the cwd exists, every limit
    set is enforced by some plugin); this only refuses what cannot be represented.
    """
    if not message.command:
        raise InvalidSpec("command", "must not be empty")
    return JobSpec(
        command=_text("command", message.command),
        args=_texts("args", message.args),
        env=_str_map("env", message.env),
        cwd=_text("cwd", message.cwd) or "/",
        limits=_limits_from_pb(message.limits) if message.HasField("limits") else _NO_LIMITS,
        isolation=(
            _isolation_from_pb(message.isolation)
            if message.HasField("isolation")
            else _NO_ISOLATION
        ),
        timeout=_number("timeout_seconds", message, "timeout_seconds"),
        options=_str_map("options", message.options),
        name=_text("name", message.name),
        labels=_str_map("labels", message.labels),
        priority=message.priority,  # the model refuses one out of range, naming "priority"
        after=[_dependency_from_pb(i, d) for i, d in enumerate(message.after)],
        hold=message.hold,
        begin_at=_timestamp("begin_at", message, "begin_at"),
    )


def _io_to_pb(io: IOLimit) -> pb.IOLimit:
    return pb.IOLimit(
        device=io.device,
        read_bps=io.read_bps,
        write_bps=io.write_bps,
        read_iops=io.read_iops,
        write_iops=io.write_iops,
    )


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
            io=[_io_to_pb(io) for io in limits.io],
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


# ---------------------------------------------------------------------------------------------
# Job
# ---------------------------------------------------------------------------------------------


def fact_to_str(value: Any) -> str:
    """A fact as a string on the wire: booleans as ``true``/``false``, numbers as ``repr``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return str(value)


def json_value(value: Any, number: Callable[[float], Any] = lambda n: n) -> Any:
    """``value`` as a ``google.protobuf.Value`` can hold it (JSON's types); anything else, and
    a number JSON cannot write (NaN, infinities), as its text. Each number is ``number(n)``
    (``float``: as the ``Value`` holds it once made, a double)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return number(value) if math.isfinite(value) else fact_to_str(value)
    if isinstance(value, list | tuple):
        return [json_value(item, number) for item in value]
    if isinstance(value, Mapping):
        return {str(key): json_value(item, number) for key, item in value.items()}
    return fact_to_str(value)


def facts_struct(facts: Mapping[str, Any]) -> struct_pb2.Struct | None:
    """Plugin facts with their types, for ``Job.fact_values``; None when there are none."""
    if not facts:
        return None
    struct = struct_pb2.Struct()
    struct.update({key: json_value(value) for key, value in facts.items()})
    return struct


def job_to_pb(job: Job) -> pb.Job:
    """The wire form of a job record. Plugin facts go twice: as text in ``facts`` (see
    :func:`fact_to_str`) and with their JSON types in ``fact_values``."""
    return pb.Job(
        id=job.id,
        owner=job.owner_name or "",
        spec=spec_to_pb(job.spec),
        state=STATE_TO_PB[job.state],
        pid=job.pid,
        exit_code=job.exit_code,
        signal=job.signal,
        end_reason=(
            END_REASON_TO_PB[job.end_reason]
            if job.end_reason is not None
            else pb.END_REASON_UNSPECIFIED
        ),
        message=job.message,
        created_at=job.created_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        facts={key: fact_to_str(value) for key, value in job.facts.items()},
        queue_reason=(
            QUEUE_REASON_TO_PB[job.queue_reason]
            if job.queue_reason is not None
            else pb.QUEUE_REASON_UNSPECIFIED
        ),
        idempotency_key=job.idempotency_key or "",
        fact_values=facts_struct(job.facts),
        external_id=job.external_id or "",
    )


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


_INT_TEXT = re.compile(r"-?\d+")


def facts_from_pb(message: pb.Job) -> dict[str, Any]:
    """The facts of a wire record with their types when the server sent them (``fact_values``),
    as text otherwise (an older server).

    A ``google.protobuf.Value`` number is a double: where the text form of the same fact is a
    whole number, that is used instead, so an integer (a byte count) stays an exact ``int``.
    """
    texts = dict(message.facts)
    if not message.HasField("fact_values"):
        return dict(texts)
    facts: dict[str, Any] = {}
    for key, value in json_format.MessageToDict(message.fact_values).items():
        text = texts.get(key)
        exact = isinstance(value, float) and text is not None and _INT_TEXT.fullmatch(text)
        facts[key] = int(text) if exact and text is not None else value
    for key, text in texts.items():
        facts.setdefault(key, text)
    return facts


def job_from_pb(message: pb.Job) -> Job:
    """A :class:`Job` record from the wire, for display by a client.

    The state, end reason and queue reason a newer server might add are shown as PENDING and
    None rather than refused, so an old client still displays the rest.
    """
    return Job(
        id=message.id,
        owner=Principal(message.owner) if message.owner else None,
        spec=spec_from_pb(message.spec),
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
        facts=facts_from_pb(message),
    )


def usage_from_pb(message: pb.Job) -> dict[str, Any]:
    """A Get answer's live usage of a running or paused job (empty otherwise)."""
    if not message.HasField("usage"):
        return {}
    return dict(json_format.MessageToDict(message.usage))


# ---------------------------------------------------------------------------------------------
# request fields
# ---------------------------------------------------------------------------------------------


def states_from_pb(states: Iterable[int]) -> set[JobState] | None:
    """The states a ListRequest filters on; None (every state) when empty."""
    result: set[JobState] = set()
    for i, value in enumerate(states):
        state = STATE_FROM_PB.get(value)  # type: ignore[call-overload]
        if state is None:
            raise InvalidSpec(f"states[{i}]", f"unknown job state {value}")
        result.add(state)
    return result or None


def streams_from_pb(stream: int) -> frozenset[Stream]:
    """The streams a TailRequest asks for; STREAM_UNSPECIFIED means both."""
    if stream == pb.STREAM_UNSPECIFIED:
        return BOTH_STREAMS
    found = STREAM_FROM_PB.get(stream)  # type: ignore[call-overload]
    if found is None:
        raise InvalidSpec("stream", f"unknown stream {stream}")
    return frozenset({found})


def start_from_pb(request: pb.TailRequest) -> StartPosition:
    """Where a TailRequest starts: the beginning (default), the end, or per-stream offsets."""
    which = request.WhichOneof("start")
    if which == "from_end" and request.from_end:
        return StartAt.END
    if which == "from_offsets":
        offsets = request.from_offsets
        for name in ("stdout", "stderr"):
            if getattr(offsets, name) > MAX_INT_LIMIT:
                raise InvalidSpec(f"from_offsets.{name}", "offset out of range")
        return {Stream.STDOUT: offsets.stdout, Stream.STDERR: offsets.stderr}
    return StartAt.BEGINNING


def start_to_pb(request: pb.TailRequest, start: StartPosition) -> None:
    """Set the ``start`` oneof of ``request`` from a model start position (client side)."""
    if start is StartAt.END:
        request.from_end = True
    elif start is StartAt.BEGINNING:
        request.from_beginning = True
    else:
        request.from_offsets.stdout = start.get(Stream.STDOUT, 0)
        request.from_offsets.stderr = start.get(Stream.STDERR, 0)


def query_from_pb(request: pb.ListRequest) -> JobQuery:
    """The :class:`~worker_core.plugin.JobQuery` a ListRequest filters by (its paging fields,
    ``page_size`` and ``page_token``, are the servicer's); InvalidSpec naming a bad field."""
    return JobQuery(
        states=frozenset(states_from_pb(request.states) or ()),
        owner=_text("owner", request.owner) or None,
        name=_text("name", request.name) or None,
        labels=_str_map("labels", request.labels),
        created_after=_timestamp("created_after", request, "created_after"),
        created_before=_timestamp("created_before", request, "created_before"),
        ended_after=_timestamp("ended_after", request, "ended_after"),
        ended_before=_timestamp("ended_before", request, "ended_before"),
    )


def query_to_pb(query: JobQuery, page_size: int = 0, page_token: str = "") -> pb.ListRequest:
    """The ListRequest for ``query`` (client side); its ``limit`` and ``before_seq`` are the
    store's and do not go on the wire."""
    return pb.ListRequest(
        states=[STATE_TO_PB[state] for state in sorted(query.states, key=lambda s: s.value)],
        owner=query.owner or "",
        name=query.name or "",
        labels=dict(query.labels),
        created_after=query.created_after,
        created_before=query.created_before,
        ended_after=query.ended_after,
        ended_before=query.ended_before,
        page_size=page_size,
        page_token=page_token,
    )


def purge_query_from_pb(request: pb.PurgeRequest) -> JobQuery | None:
    """The filter of a PurgeRequest, or None when it names jobs (``job_ids``) instead.

    A request with neither is refused rather than read as "every finished job": a purge
    removes records for good, so it must say what it removes.
    """
    owner = _text("owner", request.owner) or None
    ended_before = _timestamp("ended_before", request, "ended_before")
    if request.job_ids:
        for field, value in (("ended_before", ended_before), ("owner", owner)):
            if value is not None:
                raise InvalidSpec(field, "name jobs in job_ids or filter by it, not both")
        for i, job_id in enumerate(request.job_ids):
            if not _text(f"job_ids[{i}]", job_id):
                raise InvalidSpec(f"job_ids[{i}]", "must not be empty")
        return None
    if ended_before is None and owner is None:
        raise InvalidSpec(
            "job_ids", "name the jobs to purge, or filter them by ended_before and/or owner"
        )
    return JobQuery(owner=owner, ended_before=ended_before)
