"""The job model: what a caller asks for (:class:`JobSpec`) and what the engine records (:class:`Job`).

Everything here is plain immutable data. Plugins read it; only the engine creates new
:class:`Job` snapshots, through :func:`transition`, which is where the one-way state machine
is enforced.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import IllegalTransition, InvalidSpec

# ---------------------------------------------------------------------------
# validators: small named functions that raise InvalidSpec naming the field
# ---------------------------------------------------------------------------


def _field_name(instance: object, attribute: attrs.Attribute[Any]) -> str:
    prefix = {"Limits": "limits.", "IOLimit": "limits.io.", "JobSpec": ""}.get(
        type(instance).__name__, ""
    )
    return prefix + attribute.name


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(_field_name(instance, attribute), f"must be an integer, got {value!r}")
    if value <= 0:
        raise InvalidSpec(_field_name(instance, attribute), f"must be positive, got {value}")


def _positive_number(
    instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(_field_name(instance, attribute), f"must be a number, got {value!r}")
    if not 0 < value < float("inf"):  # also refuses NaN
        raise InvalidSpec(
            _field_name(instance, attribute), f"must be a positive finite number, got {value}"
        )


def _weight(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    _positive_int(instance, attribute, value)
    if value is not None and not 1 <= value <= 10000:
        raise InvalidSpec(
            _field_name(instance, attribute), f"must be between 1 and 10000, got {value}"
        )


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _io_tuple(value: Iterable[IOLimit]) -> tuple[IOLimit, ...]:
    return tuple(value)


@attrs.frozen
class IOLimit:
    """Per-device IO caps. ``device`` is a block-device path (``/dev/vda``) or ``MAJ:MIN``."""

    device: str
    read_bps: int | None = attrs.field(default=None, validator=_positive_int)
    write_bps: int | None = attrs.field(default=None, validator=_positive_int)
    read_iops: int | None = attrs.field(default=None, validator=_positive_int)
    write_iops: int | None = attrs.field(default=None, validator=_positive_int)


@attrs.frozen
class Limits:
    """Resource limits. ``None`` means "not set"; a plugin (``cgroups``) enforces them.

    Sizes are bytes; ``cpu`` is a fraction of cores (0.5 = half of one core).
    """

    memory_max: int | None = attrs.field(default=None, validator=_positive_int)
    memory_high: int | None = attrs.field(default=None, validator=_positive_int)
    cpu: float | None = attrs.field(default=None, validator=_positive_number)
    cpu_weight: int | None = attrs.field(default=None, validator=_weight)
    io_weight: int | None = attrs.field(default=None, validator=_weight)
    io: tuple[IOLimit, ...] = attrs.field(default=(), converter=_io_tuple)
    pids_max: int | None = attrs.field(default=None, validator=_positive_int)

    def set_fields(self) -> list[str]:
        """Dotted names (``limits.memory_max``) of every limit that is set."""
        names = [
            f"limits.{a.name}"
            for a in attrs.fields(Limits)
            if a.name != "io" and getattr(self, a.name) is not None
        ]
        if self.io:
            names.append("limits.io")
        return names


@attrs.frozen
class Isolation:
    """Isolation requests beyond what enabled namespace plugins apply to every job."""

    uid: int | None = attrs.field(default=None)
    gid: int | None = attrs.field(default=None)

    @uid.validator
    @gid.validator
    def _non_negative(self, attribute: attrs.Attribute[Any], value: int | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32 - 1:
            raise InvalidSpec(f"isolation.{attribute.name}", f"must be a valid id, got {value!r}")

    def set_fields(self) -> list[str]:
        return [
            f"isolation.{a.name}"
            for a in attrs.fields(Isolation)
            if getattr(self, a.name) is not None
        ]


def _freeze_str_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    # A private copy, so a caller mutating its dict after submit cannot change the spec.
    return dict(value or {})


class DependencyKind(enum.Enum):
    """When a dependency is satisfied (Slurm's afterok, afterany, afternotok)."""

    OK = "ok"  # the job it names exited with code 0
    ANY = "any"  # the job it names ended, whatever the outcome
    FAILED = "failed"  # the job it names ended unsuccessfully


@attrs.frozen
class Dependency:
    """Start only once job ``job_id`` has ended as ``kind`` asks."""

    job_id: str
    kind: DependencyKind = DependencyKind.OK


def _dependency_tuple(value: Iterable[Dependency]) -> tuple[Dependency, ...]:
    return tuple(value)


#: The range of :attr:`JobSpec.priority`; higher starts first.
PRIORITY_RANGE = (-1000, 1000)


def _priority(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec("priority", f"must be an integer, got {value!r}")
    low, high = PRIORITY_RANGE
    if not low <= value <= high:
        raise InvalidSpec("priority", f"must be between {low} and {high}, got {value}")


@attrs.frozen(hash=False)  # holds mappings: compares by value, not hashable (key by job.id)
class JobSpec:
    """What to run and under which constraints. Plain data; validated by :mod:`worker_core._validation`.

    ``options`` carries third-party plugin options as ``"plugin.key": "value"`` strings; the
    plugin named before the dot validates and enforces them. ``name`` and ``labels`` are the
    caller's own words for the job (shown and filtered on, never interpreted). ``priority``,
    ``after``, ``hold`` and ``begin_at`` (a Unix time) are for the scheduler.
    """

    command: str
    args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_str_map)
    cwd: str = "/"
    limits: Limits = attrs.field(factory=Limits)
    isolation: Isolation = attrs.field(factory=Isolation)
    timeout: float | None = attrs.field(default=None, validator=_positive_number)
    options: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_str_map)
    name: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_str_map)
    priority: int = attrs.field(default=0, validator=_priority)
    after: tuple[Dependency, ...] = attrs.field(default=(), converter=_dependency_tuple)
    hold: bool = False
    begin_at: float | None = None


class JobState(enum.Enum):
    """Where a job is in its life (see :data:`ALLOWED_TRANSITIONS`)."""

    QUEUED = "queued"  # accepted; waits for the scheduler (see Job.queue_reason)
    HELD = "held"  # accepted; waits until released
    PENDING = "pending"  # admitted; the spawn plan is being built or applied
    RUNNING = "running"  # its process exists
    PAUSED = "paused"  # frozen; resumes to RUNNING
    STOPPING = "stopping"  # a stop was requested; signals are being delivered
    ENDED = "ended"  # final; see Job.end_reason


class QueueReason(enum.Enum):
    """Why a QUEUED job has not started yet (as squeue's REASON)."""

    PRIORITY = "priority"  # jobs ahead of it in the queue start first
    RESOURCES = "resources"  # the memory or CPU budget is used by running jobs
    RUNNING_CAP = "running_cap"  # [engine] max_running jobs are running
    OWNER_CAP = "owner_cap"  # its owner has as many jobs running as allowed
    DEPENDENCY = "dependency"  # a job it depends on has not ended yet
    BEGIN_TIME = "begin_time"  # its begin time has not come
    PLUGIN = "plugin"  # a plugin delays it (see the admit hook)


class EndReason(enum.Enum):
    """Why a job ended."""

    EXITED = "exited"  # the process ended on its own (exit code, or a signal nobody here sent)
    STOPPED = "stopped"  # stopped on request
    OOM_KILLED = "oom_killed"  # killed by the kernel's OOM killer under its memory limit
    TIMED_OUT = "timed_out"  # ran past spec.timeout and was stopped
    FAILED_TO_START = "failed_to_start"  # never ran: exec failed, bad cwd, a plugin refused...
    LOST = "lost"  # the engine lost track of the process (its launcher died, the server died)
    SHUTDOWN = "shutdown"  # the engine (the server) shut down while it ran
    DEPENDENCY_FAILED = "dependency_failed"  # never ran: a dependency can no longer be met


ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.HELD, JobState.PENDING, JobState.ENDED}),
    JobState.HELD: frozenset({JobState.QUEUED, JobState.ENDED}),
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.STOPPING, JobState.ENDED}),
    JobState.RUNNING: frozenset({JobState.PAUSED, JobState.STOPPING, JobState.ENDED}),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.STOPPING, JobState.ENDED}),
    JobState.STOPPING: frozenset({JobState.ENDED}),
    JobState.ENDED: frozenset(),
}

#: States in which a job has not started and may still never start.
WAITING_STATES = frozenset({JobState.QUEUED, JobState.HELD})
#: States in which a job's processes may exist.
ACTIVE_STATES = frozenset({JobState.PENDING, JobState.RUNNING, JobState.PAUSED, JobState.STOPPING})


@attrs.frozen
class Principal:
    """An authenticated caller. Transports fill ``name`` from a verified source (the TLS CN)
    and, where the caller presented a certificate, its serial number (hex) and SHA-256
    fingerprint (hex), so an authorization plugin can refuse a revoked certificate."""

    name: str
    # Not part of equality: a principal is who it is, whichever of its certificates it used.
    cert_serial: str | None = attrs.field(default=None, kw_only=True, eq=False)
    cert_sha256: str | None = attrs.field(default=None, kw_only=True, eq=False)


@attrs.frozen(hash=False)  # holds mappings: compares by value, not hashable (key by job.id)
class Job:
    """An immutable snapshot of a job's record. The engine publishes a new one on every change."""

    id: str
    owner: Principal | None
    spec: JobSpec
    state: JobState = JobState.PENDING
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    end_reason: EndReason | None = None
    message: str = ""
    created_at: float = attrs.field(factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    #: Why a QUEUED job waits; None in every other state.
    queue_reason: QueueReason | None = None
    #: The caller's key for an idempotent submit: a second submit with it returns this job.
    idempotency_key: str | None = None
    #: The executor's own id for the job (Slurm's job id); None under the local launcher.
    external_id: str | None = None
    # Facts reported by plugins in post_exit (e.g. "oom_killed", "memory_peak", "cpu_seconds").
    facts: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def is_finished(self) -> bool:
        return self.state is JobState.ENDED

    @property
    def owner_name(self) -> str | None:
        return self.owner.name if self.owner else None


def transition(job: Job, new_state: JobState, **changes: Any) -> Job:
    """Return ``job`` moved to ``new_state`` with ``changes`` applied; refuse illegal moves."""
    if new_state not in ALLOWED_TRANSITIONS[job.state]:
        raise IllegalTransition(
            f"job {job.id}: {job.state.value} -> {new_state.value} is not allowed"
        )
    return attrs.evolve(job, state=new_state, **changes)


@attrs.define
class ExitResult:
    """What is known when a job's process has ended; ``post_exit`` hooks may add facts.

    Mutable on purpose: plugins set ``oom_killed`` or add to ``facts`` and the engine folds it
    into the final :class:`Job` record.
    """

    exit_code: int | None
    signal: int | None
    cpu_seconds: float | None = None
    # The launcher's wait4 peak: an upper bound for a forked job (it counts pages shared with
    # the launcher before exec), which is why the engine does not report it as a fact.
    max_rss_bytes: int | None = None
    oom_killed: bool = False
    facts: dict[str, Any] = attrs.Factory(dict)


class Action(enum.Enum):
    """What a principal asks to do; ``authorize`` hooks decide."""

    SUBMIT = "submit"  # also release, for one's own jobs
    STOP = "stop"  # also signal, pause, resume
    READ = "read"  # get, list, tail, watch, wait
    PURGE = "purge"  # remove a finished job's record and output
