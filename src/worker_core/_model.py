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


@attrs.frozen(hash=False)  # holds mappings: compares by value, not hashable (key by job.id)
class JobSpec:
    """What to run and under which constraints. Plain data; validated by :mod:`worker_core._validation`.

    ``options`` carries third-party plugin options as ``"plugin.key": "value"`` strings; the
    plugin named before the dot validates and enforces them.
    """

    command: str
    args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_str_map)
    cwd: str = "/"
    limits: Limits = attrs.field(factory=Limits)
    isolation: Isolation = attrs.field(factory=Isolation)
    timeout: float | None = attrs.field(default=None, validator=_positive_number)
    options: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_str_map)


class JobState(enum.Enum):
    """Where a job is in its life. States only move forward (see :data:`ALLOWED_TRANSITIONS`)."""

    PENDING = "pending"  # registered; the spawn plan is being built or applied
    RUNNING = "running"  # its process exists
    STOPPING = "stopping"  # a stop was requested; signals are being delivered
    ENDED = "ended"  # final; see Job.end_reason


class EndReason(enum.Enum):
    """Why a job ended."""

    EXITED = "exited"  # the process ended on its own (exit code, or a signal nobody here sent)
    STOPPED = "stopped"  # stopped on request
    OOM_KILLED = "oom_killed"  # killed by the kernel's OOM killer under its memory limit
    TIMED_OUT = "timed_out"  # ran past spec.timeout and was stopped
    FAILED_TO_START = "failed_to_start"  # never ran: exec failed, bad cwd, a plugin refused...
    LOST = "lost"  # the engine lost track of the process (its launcher died)


ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.STOPPING, JobState.ENDED}),
    JobState.RUNNING: frozenset({JobState.STOPPING, JobState.ENDED}),
    JobState.STOPPING: frozenset({JobState.ENDED}),
    JobState.ENDED: frozenset(),
}


@attrs.frozen
class Principal:
    """An authenticated caller. Transports fill ``name`` from a verified source (the TLS CN)."""

    name: str


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

    SUBMIT = "submit"
    STOP = "stop"
    READ = "read"  # get, list, tail
