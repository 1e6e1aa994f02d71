"""Jobs as the command line shows them: plain tuples with the library record's shape.

A :class:`JobView` has the fields of :class:`worker_core.Job` (and its spec those of
:class:`worker_core.JobSpec`) under the same names, with each enum as its value, the word a
user reads (``state == "queued"``, ``end_reason == "timed_out"``). ``worker job get`` reads
one straight from the server's message (:func:`.wire.view_from_pb`) and prints it, without
building the library's validated records: those are attrs classes, whose import alone would
cost ``get``, ``list`` and ``stop`` about a tenth of their start-up. ``worker run`` shows its
engine's records through :func:`view_of`; ``--json`` turns a view back into the library's
record (:func:`record_of`), whose shape it prints.

The words are the values of the model's enums; :data:`STATES`, :data:`END_REASONS`,
:data:`QUEUE_REASONS` and :data:`DEPENDENCY_KINDS` list them in the enums' order, and a test
holds the two together.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

if TYPE_CHECKING:
    from worker_core import Job

State = Literal["queued", "held", "pending", "running", "paused", "stopping", "ended"]
EndReasonWord = Literal[
    "exited",
    "stopped",
    "oom_killed",
    "timed_out",
    "failed_to_start",
    "lost",
    "shutdown",
    "dependency_failed",
]
QueueReasonWord = Literal[
    "priority", "resources", "running_cap", "owner_cap", "dependency", "begin_time", "plugin"
]
DependencyKindWord = Literal["ok", "any", "failed"]

#: The default of the mapping fields: shared, so it must not change.
_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: :class:`worker_core.JobState`'s values, in its order.
STATES: tuple[State, ...] = get_args(State)
#: :class:`worker_core.EndReason`'s values, in its order.
END_REASONS: tuple[EndReasonWord, ...] = get_args(EndReasonWord)
#: :class:`worker_core.QueueReason`'s values, in its order.
QUEUE_REASONS: tuple[QueueReasonWord, ...] = get_args(QueueReasonWord)
#: :class:`worker_core.DependencyKind`'s values, in its order.
DEPENDENCY_KINDS: tuple[DependencyKindWord, ...] = get_args(DependencyKindWord)


class IOLimitView(NamedTuple):
    device: str
    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None


class LimitsView(NamedTuple):
    memory_max: int | None = None
    memory_high: int | None = None
    cpu: float | None = None
    cpu_weight: int | None = None
    io_weight: int | None = None
    io: tuple[IOLimitView, ...] = ()
    pids_max: int | None = None


class IsolationView(NamedTuple):
    uid: int | None = None
    gid: int | None = None


class DependencyView(NamedTuple):
    job_id: str
    kind: DependencyKindWord = "ok"


class SpecView(NamedTuple):
    """A :class:`worker_core.JobSpec`, field for field."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = _EMPTY
    cwd: str = "/"
    limits: LimitsView = LimitsView()
    isolation: IsolationView = IsolationView()
    timeout: float | None = None
    options: Mapping[str, str] = _EMPTY
    name: str = ""
    labels: Mapping[str, str] = _EMPTY
    priority: int = 0
    after: tuple[DependencyView, ...] = ()
    hold: bool = False
    begin_at: float | None = None


class JobView(NamedTuple):
    """A :class:`worker_core.Job`, field for field, the owner by name and enums as words."""

    id: str
    owner_name: str | None
    spec: SpecView
    state: State = "pending"
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    end_reason: EndReasonWord | None = None
    message: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    queue_reason: QueueReasonWord | None = None
    idempotency_key: str | None = None
    external_id: str | None = None
    facts: Mapping[str, Any] = _EMPTY

    @property
    def is_finished(self) -> bool:
        return self.state == "ended"


def _word(value: Any) -> Any:
    return None if value is None else value.value


def view_of(job: Job) -> JobView:
    """The view of a library record (``worker run``'s, or a test's)."""
    spec, limits = job.spec, job.spec.limits
    return JobView(
        id=job.id,
        owner_name=job.owner_name,
        spec=SpecView(
            command=spec.command,
            args=tuple(spec.args),
            env=dict(spec.env),
            cwd=spec.cwd,
            limits=LimitsView(
                memory_max=limits.memory_max,
                memory_high=limits.memory_high,
                cpu=limits.cpu,
                cpu_weight=limits.cpu_weight,
                io_weight=limits.io_weight,
                io=tuple(
                    IOLimitView(io.device, io.read_bps, io.write_bps, io.read_iops, io.write_iops)
                    for io in limits.io
                ),
                pids_max=limits.pids_max,
            ),
            isolation=IsolationView(spec.isolation.uid, spec.isolation.gid),
            timeout=spec.timeout,
            options=dict(spec.options),
            name=spec.name,
            labels=dict(spec.labels),
            priority=spec.priority,
            after=tuple(DependencyView(d.job_id, d.kind.value) for d in spec.after),
            hold=spec.hold,
            begin_at=spec.begin_at,
        ),
        state=job.state.value,
        pid=job.pid,
        exit_code=job.exit_code,
        signal=job.signal,
        end_reason=_word(job.end_reason),
        message=job.message,
        created_at=job.created_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        queue_reason=_word(job.queue_reason),
        idempotency_key=job.idempotency_key,
        external_id=job.external_id,
        facts=dict(job.facts),
    )


def record_of(view: JobView) -> Job:
    """The library's record of a view (``--json`` prints its shape)."""
    # Imported here: the model's attrs classes are what the views keep out of start-up.
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
    )

    spec, limits = view.spec, view.spec.limits
    return Job(
        id=view.id,
        owner=Principal(view.owner_name) if view.owner_name else None,
        spec=JobSpec(
            command=spec.command,
            args=spec.args,
            env=spec.env,
            cwd=spec.cwd,
            limits=Limits(
                memory_max=limits.memory_max,
                memory_high=limits.memory_high,
                cpu=limits.cpu,
                cpu_weight=limits.cpu_weight,
                io_weight=limits.io_weight,
                io=[IOLimit(*io) for io in limits.io],
                pids_max=limits.pids_max,
            ),
            isolation=Isolation(uid=spec.isolation.uid, gid=spec.isolation.gid),
            timeout=spec.timeout,
            options=spec.options,
            name=spec.name,
            labels=spec.labels,
            priority=spec.priority,
            after=[Dependency(d.job_id, DependencyKind(d.kind)) for d in spec.after],
            hold=spec.hold,
            begin_at=spec.begin_at,
        ),
        state=JobState(view.state),
        pid=view.pid,
        exit_code=view.exit_code,
        signal=view.signal,
        end_reason=EndReason(view.end_reason) if view.end_reason else None,
        message=view.message,
        created_at=view.created_at,
        started_at=view.started_at,
        ended_at=view.ended_at,
        queue_reason=QueueReason(view.queue_reason) if view.queue_reason else None,
        idempotency_key=view.idempotency_key,
        external_id=view.external_id,
        facts=dict(view.facts),
    )
