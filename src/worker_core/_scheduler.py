"""The scheduler: which waiting job starts next, and why the others wait.

Policy, in one paragraph (docs/SCHEDULING.md says the same): a job starts once it is not
held, its begin time has come, every job it depends on has ended as required, and starting
it keeps every bound: at most ``max_running`` jobs running, at most
``max_running_per_owner`` of one owner's, and the sum of running jobs' memory maximums and
CPU fractions within the host's budgets (a job without a limit counts the default
reservation). Among jobs that may start, higher ``priority`` goes first; at the same
priority owners take turns (round robin, the owner whose job started longest ago first), so
one owner's thousand jobs do not starve another's one; an owner's own jobs start in
submission order. A job whose turn comes but does not fit lets the next owner's job start
(backfill), so a large job may wait while smaller ones pass it.

This module keeps the bookkeeping and makes the decisions; the engine moves the jobs. It
never calls back into the engine while holding its lock.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from ._config import EngineSettings
from ._errors import InvalidSpec
from ._model import Dependency, DependencyKind, EndReason, Job, JobSpec, QueueReason

#: How many blocked candidates one pass looks at before it stops (bounded work per pass).
MAX_BLOCKED_PER_PASS = 64


@attrs.frozen
class Host:
    """What the host has, for the budgets."""

    memory_bytes: int
    cpus: int

    @classmethod
    def unbounded(cls) -> Host:
        """No bound: the jobs run elsewhere (an executor's cluster decides)."""
        return cls(memory_bytes=1 << 62, cpus=1 << 20)

    @classmethod
    def detect(cls) -> Host:
        memory = 0
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            pass
        try:
            cpus = len(os.sched_getaffinity(0))
        except OSError:
            cpus = os.cpu_count() or 1
        return cls(memory_bytes=memory or (1 << 62), cpus=max(cpus, 1))


@attrs.frozen
class Demand:
    """What a running job counts against the budgets."""

    owner: str | None
    memory: int
    cpu: float


def dependency_outcome(kind: DependencyKind, ended: Job | None) -> bool | None:
    """Whether a dependency on ``ended`` is met (True), can never be met (False), or not yet
    known (None: the job has not ended). A dependency whose job is gone (purged) counts as
    ended unknown: met only for ``ANY``."""
    if ended is None:
        return kind is DependencyKind.ANY
    if not ended.is_finished:
        return None
    succeeded = ended.end_reason is EndReason.EXITED and ended.exit_code == 0
    if kind is DependencyKind.ANY:
        return True
    if kind is DependencyKind.OK:
        return succeeded
    return not succeeded


@attrs.define
class _Waiting:
    """A job that waits in the scheduler. ``item`` is the engine's own handle."""

    job: Job
    demand: Demand
    item: object
    pending: dict[str, DependencyKind] = attrs.Factory(dict)
    begin_due: bool = True
    reason: QueueReason | None = None

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def owner(self) -> str | None:
        return self.job.owner_name

    @property
    def priority(self) -> int:
        return self.job.spec.priority


@attrs.frozen
class Decision:
    """The outcome of an event: jobs to start now (their demand is reserved), jobs that can
    never run (a dependency failed), and new queue reasons to record."""

    start: list[object] = attrs.Factory(list)
    fail: list[tuple[object, str]] = attrs.Factory(list)
    reasons: list[tuple[object, QueueReason]] = attrs.Factory(list)


class Scheduler:
    """Admission and order for waiting jobs. Thread-safe."""

    def __init__(
        self,
        settings: EngineSettings,
        host: Host,
        admit: Callable[[Job], str | None] | None = None,
    ) -> None:
        self._settings = settings
        self._host = host
        self._admit = admit
        self._lock = threading.RLock()
        self._running: dict[str, Demand] = {}
        self._used_memory = 0
        self._used_cpu = 0.0
        self._per_owner: dict[str | None, int] = {}
        # Jobs that may start as far as dependencies and begin times go, by priority, then by
        # owner in turn order, each owner's in submission order.
        self._ready: dict[int, OrderedDict[str | None, deque[_Waiting]]] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._dependants: dict[str, set[str]] = {}
        self.memory_budget = int(host.memory_bytes * settings.memory_budget_share)
        self.cpu_budget = host.cpus * settings.cpu_budget_share

    # -- demand -----------------------------------------------------------------------------

    def demand(self, spec: JobSpec, owner: str | None) -> Demand:
        limits = spec.limits
        memory = limits.memory_max or self._settings.default_memory_reservation
        cpu = limits.cpu if limits.cpu is not None else self._settings.default_cpu_reservation
        return Demand(owner, memory, cpu)

    def check_fits(self, spec: JobSpec) -> None:
        """Refuse a job that could never start here, however empty the host."""
        demand = self.demand(spec, None)
        if demand.memory > self.memory_budget:
            raise InvalidSpec(
                "limits.memory_max",
                f"asks for {_size(demand.memory)}, more than the {_size(self.memory_budget)} "
                f"this host allows all jobs together ([engine] memory_budget_share "
                f"{self._settings.memory_budget_share:g} of {_size(self._host.memory_bytes)})",
            )
        if demand.cpu > self.cpu_budget + 1e-9:
            raise InvalidSpec(
                "limits.cpu",
                f"asks for {demand.cpu:g} CPUs, more than the {self.cpu_budget:g} this host "
                f"allows all jobs together ([engine] cpu_budget_share "
                f"{self._settings.cpu_budget_share:g} of {self._host.cpus} CPUs)",
            )

    def _blocker(self, demand: Demand) -> QueueReason | None:
        settings = self._settings
        if settings.max_running and len(self._running) >= settings.max_running:
            return QueueReason.RUNNING_CAP
        if (
            settings.max_running_per_owner
            and self._per_owner.get(demand.owner, 0) >= settings.max_running_per_owner
        ):
            return QueueReason.OWNER_CAP
        if self._used_memory + demand.memory > self.memory_budget or (
            self._used_cpu + demand.cpu > self.cpu_budget + 1e-9
        ):
            return QueueReason.RESOURCES
        return None

    def _reserve(self, job_id: str, demand: Demand) -> None:
        self._running[job_id] = demand
        self._used_memory += demand.memory
        self._used_cpu += demand.cpu
        self._per_owner[demand.owner] = self._per_owner.get(demand.owner, 0) + 1

    def adopt(self, job: Job) -> None:
        """Count a job that runs already (followed again after a restart)."""
        with self._lock:
            if job.id not in self._running:
                self._reserve(job.id, self.demand(job.spec, job.owner_name))

    def unreserve(self, job_id: str) -> None:
        """Give back what a job held (it ended, or it was never recorded)."""
        with self._lock:
            demand = self._running.pop(job_id, None)
            if demand is None:
                return
            self._used_memory -= demand.memory
            self._used_cpu -= demand.cpu
            left = self._per_owner.get(demand.owner, 1) - 1
            if left:
                self._per_owner[demand.owner] = left
            else:
                self._per_owner.pop(demand.owner, None)

    # -- arrivals ---------------------------------------------------------------------------

    def try_start_now(self, job: Job) -> QueueReason | None:
        """For a new job with nothing to wait for: reserve and return None if it may start at
        once (nothing of its priority or higher is waiting), or the reason it must queue."""
        demand = self.demand(job.spec, job.owner_name)
        with self._lock:
            if any(p >= job.spec.priority and q for p, q in self._ready.items()):
                return QueueReason.PRIORITY
            blocker = self._blocker(demand)
            if blocker is None and self._admit is not None and self._admit(job):
                blocker = QueueReason.PLUGIN
            if blocker is None:
                self._reserve(job.id, demand)
            return blocker

    def enqueue(
        self,
        item: object,
        job: Job,
        dependencies: Iterable[tuple[Dependency, Job | None]],
        begin_due: bool,
    ) -> Decision:
        """A QUEUED job waits here until it may start. ``dependencies`` pairs each of its
        dependencies with the record of the job it names (None if that record is gone)."""
        waiting = _Waiting(job, self.demand(job.spec, job.owner_name), item)
        waiting.begin_due = begin_due
        for dependency, record in dependencies:
            outcome = dependency_outcome(dependency.kind, record)
            if outcome is False:
                return Decision(fail=[(item, _dependency_message(dependency, record))])
            if outcome is None:
                waiting.pending[dependency.job_id] = dependency.kind
        with self._lock:
            self._waiting[job.id] = waiting
            for dep_id in waiting.pending:
                self._dependants.setdefault(dep_id, set()).add(job.id)
            if waiting.pending:
                return self._note(waiting, QueueReason.DEPENDENCY)
            if not begin_due:
                return self._note(waiting, QueueReason.BEGIN_TIME)
            self._make_ready(waiting)
            return self._pass()

    def begin_due(self, job_id: str) -> Decision:
        """A waiting job's begin time has come."""
        with self._lock:
            waiting = self._waiting.get(job_id)
            if waiting is None or waiting.begin_due:
                return Decision()
            waiting.begin_due = True
            if waiting.pending:
                return Decision()
            self._make_ready(waiting)
            return self._pass()

    def remove(self, job_id: str) -> bool:
        """Forget a waiting job (stopped before it started); True if it was waiting."""
        with self._lock:
            waiting = self._waiting.pop(job_id, None)
            if waiting is None:
                return False
            for dep_id in waiting.pending:
                self._dependants.get(dep_id, set()).discard(job_id)
            level = self._ready.get(waiting.priority)
            if level is not None:
                queue = level.get(waiting.owner)
                if queue is not None and waiting in queue:
                    queue.remove(waiting)
                    if not queue:
                        del level[waiting.owner]
            return True

    def ended(self, job: Job) -> Decision:
        """``job`` ended: what it held is free, and jobs waiting on it may move."""
        self.unreserve(job.id)
        return self.settled(job)

    def settled(self, job: Job) -> Decision:
        """Jobs waiting on ``job``, which has ended, may move. Idempotent: a dependant already
        released (or not waiting on it) is left as it is. :meth:`ended` calls it; so does the
        engine for a dependency it saw unfinished before the dependant was registered here
        (the dependency may have ended, and :meth:`ended` found no dependant, meanwhile)."""
        with self._lock:
            fail: list[tuple[object, str]] = []
            reasons: list[tuple[object, QueueReason]] = []
            for dependant_id in sorted(self._dependants.pop(job.id, set())):
                waiting = self._waiting.get(dependant_id)
                if waiting is None:
                    continue
                kind = waiting.pending.pop(job.id, None)
                if kind is None:
                    continue
                outcome = dependency_outcome(kind, job)
                if outcome is False:
                    self.remove(dependant_id)
                    fail.append((waiting.item, _dependency_message(Dependency(job.id, kind), job)))
                elif not waiting.pending:
                    if waiting.begin_due:
                        self._make_ready(waiting)
                    else:
                        reasons.extend(self._note(waiting, QueueReason.BEGIN_TIME).reasons)
            decided = self._pass()
            return Decision(decided.start, fail + decided.fail, reasons + decided.reasons)

    def kick(self) -> Decision:
        """Look at the queue again (a plugin that delayed a job may let it go now)."""
        with self._lock:
            return self._pass()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    # -- the pass ---------------------------------------------------------------------------

    def _make_ready(self, waiting: _Waiting) -> None:
        level = self._ready.setdefault(waiting.priority, OrderedDict())
        queue = level.get(waiting.owner)
        if queue is None:
            # A new owner joins the rotation at the back; as every owner's turn moves it to
            # the back, the front is whoever started a job longest ago.
            queue = level[waiting.owner] = deque()
        queue.append(waiting)

    def _drop_empty_levels(self) -> None:
        for priority in [p for p, level in self._ready.items() if not level]:
            del self._ready[priority]

    def _note(self, waiting: _Waiting, reason: QueueReason) -> Decision:
        if waiting.reason is reason:
            return Decision()
        waiting.reason = reason
        return Decision(reasons=[(waiting.item, reason)])

    def _pass(self) -> Decision:
        """Start what may start, in policy order. Call with the lock held."""
        start: list[object] = []
        reasons: list[tuple[object, QueueReason]] = []
        blocked = 0
        for priority in sorted(self._ready, reverse=True):
            level = self._ready[priority]
            # An owner whose next job does not fit now stays blocked for this pass: starting
            # other jobs only takes more.
            blocked_owners: set[str | None] = set()
            moved = True
            while moved and blocked < MAX_BLOCKED_PER_PASS:
                moved = False
                for owner in list(level):
                    if owner in blocked_owners:
                        continue
                    queue = level[owner]
                    waiting = queue[0]
                    reason = self._blocker(waiting.demand)
                    if reason is None and self._admit is not None and self._admit(waiting.job):
                        reason = QueueReason.PLUGIN
                    if reason is None:
                        queue.popleft()
                        if not queue:
                            del level[owner]
                        else:
                            level.move_to_end(owner)
                        del self._waiting[waiting.job_id]
                        self._reserve(waiting.job_id, waiting.demand)
                        start.append(waiting.item)
                        moved = True
                        break  # the rotation starts again from the front
                    reasons.extend(self._note(waiting, reason).reasons)
                    if reason is QueueReason.RUNNING_CAP:
                        # Everything else waits for the same cap: nothing more to try.
                        self._drop_empty_levels()
                        return Decision(start=start, reasons=reasons)
                    blocked_owners.add(owner)
                    blocked += 1
                    if blocked >= MAX_BLOCKED_PER_PASS:
                        break
        self._drop_empty_levels()
        return Decision(start=start, reasons=reasons)


def _dependency_message(dependency: Dependency, record: Job | None) -> str:
    if record is None:
        return f"job {dependency.job_id} it depends on is gone"
    how = record.end_reason.value if record.end_reason else "ended"
    code = f" with code {record.exit_code}" if record.exit_code is not None else ""
    wanted = {
        DependencyKind.OK: "to exit with code 0",
        DependencyKind.FAILED: "to fail",
        DependencyKind.ANY: "to end",
    }[dependency.kind]
    return f"job {dependency.job_id} it depends on ended ({how}{code}); it needed it {wanted}"


def _size(value: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    amount = float(value)
    for unit in units:
        if amount < 1024 or unit == units[-1]:
            return f"{amount:.1f} {unit}" if unit != "B" else f"{int(amount)} B"
        amount /= 1024
    return f"{value} B"
