"""The engine: submits, tracks, stops and reports jobs, firing hooks along the way.

It knows no transport, no policy and no cgroup file; plugins supply those. It is thread-safe,
and :attr:`Engine.aio` gives asyncio code the same operations without blocking a loop.

Threads it runs: the launcher reader (exit reports), the output pump (all pipes), a scheduler
(stop escalation, time limits) and a small finalizer pool (``post_exit`` hooks).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import pluggy

from . import _plugins as plugin_loading
from . import _validation as validation
from ._config import Config
from ._ending import Retention, end_reason, expired
from ._errors import (
    AmbiguousJobId,
    EngineClosed,
    FailedPrecondition,
    InvalidSpec,
    JobNotFound,
    PermissionDenied,
    PluginError,
    ResourceExhausted,
    WorkerError,
)
from ._executor import Ended, Executor, LaunchFailed
from ._jobstore import OUTPUT_BYTES_FACT, JobQuery, JobStore, StoreUnavailable
from ._launcher import ExitReport, LauncherClient, LauncherDied, SpawnFailed
from ._launcher_main import restricted_plan
from ._launchers import LauncherPool, default_size
from ._model import (
    ACTIVE_STATES,
    WAITING_STATES,
    Action,
    Dependency,
    EndReason,
    ExitResult,
    Job,
    JobSpec,
    JobState,
    Principal,
    QueueReason,
    transition,
)
from ._output import BOTH_STREAMS, Chunk, Follower, OutputStore, StartAt, StartPosition, Stream
from ._paging import decode_token, encode_token
from ._plan import SpawnPlan
from ._pump import OutputPump, enlarge_pipe
from ._scheduler import Decision, Host, Scheduler
from ._state_dir import StateDir
from ._timers import TimerQueue
from ._tracked import TrackedJob
from ._watch import JobWatcher

if TYPE_CHECKING:
    from ._aio import AsyncEngine

log = logging.getLogger("worker.engine")

#: The fewest characters of a job id accepted as a prefix of it.
MIN_ID_PREFIX = 4
#: The most records one page of :meth:`Engine.list_page` holds.
MAX_PAGE_SIZE = 1000
#: Signals a job may be sent (Engine.signal).
_SIGNALS = frozenset(int(s) for s in signal.valid_signals())

#: Seconds after which jobs a plugin's ``admit`` hook delayed are looked at again.
ADMIT_RETRY_SECONDS = 2.0

#: Seconds between runs of retention (and retries of records the store could not commit).
HOUSEKEEPING_INTERVAL = 30.0


@attrs.frozen
class JobPage:
    """One page of a listing: newest first; ``next_page_token`` is "" on the last page."""

    jobs: list[Job]
    next_page_token: str


class Engine:
    """Runs confined jobs. Use as a context manager, or call :meth:`start` and :meth:`close`.

    ``plugins`` are names (``"cgroups,netns"`` or a list) resolved through the
    ``worker.plugins`` entry points, or plugin objects, or a mix. The ``memory`` output store
    is always loaded unless ``"no:memory"`` is given.
    """

    def __init__(
        self,
        plugins: str | Sequence[str | object] | None = None,
        config: Config | None = None,
    ) -> None:
        self.config = config or Config()
        self._settings = self.config.engine
        self._pm = plugin_loading.make_plugin_manager()
        names: list[str | object]
        if isinstance(plugins, str) or plugins is None:
            names = list(plugin_loading.parse_plugin_names(plugins))
        else:
            named = plugin_loading.parse_plugin_names([p for p in plugins if isinstance(p, str)])
            names = [*named, *(p for p in plugins if not isinstance(p, str))]
        plugin_loading.load_plugins(self._pm, names)
        self.hooks = plugin_loading.Hooks(self._pm)
        self.hooks.configure(self, self.config)
        self._lock = threading.RLock()
        # Jobs not yet ENDED (their live state); records of the rest live in the job store.
        self._jobs: dict[str, TrackedJob] = {}
        # Entries whose newest snapshot the store could not commit; retried by housekeeping.
        self._unsaved: dict[str, TrackedJob] = {}
        self._state_dir: StateDir | None = None
        self._records: JobStore | None = None
        self._queue: Scheduler | None = None
        self._executor: Executor | None = None
        self._kick_pending = False
        self._final: dict[str, Job] = {}
        self._started = False
        self._closed = False
        self._launchers = LauncherPool(
            default_size(self._settings.launchers),
            self._on_exit,
            self._on_launcher_death,
            self._settings.launcher_timeout,
        )
        # Launchers for jobs that may hold no capability and gain none (every job the runas
        # plugin starts unprivileged): started at the first such job. See restricted_plan.
        self._restricted_launchers = LauncherPool(
            default_size(self._settings.launchers),
            self._on_exit,
            self._on_launcher_death,
            self._settings.launcher_timeout,
            restricted=True,
        )
        self._store: OutputStore | None = None
        self._exit_is_cheap = False
        self._pump: OutputPump | None = None
        self._timers: TimerQueue | None = None
        self._finalizer: ThreadPoolExecutor | None = None
        self._aio: AsyncEngine | None = None

    # -------------------------------------------------------------------------------------
    # lifecycle
    # -------------------------------------------------------------------------------------

    @property
    def aio(self) -> AsyncEngine:
        """The same operations for asyncio code: awaitable, never blocking the loop."""
        aio = self._aio
        if aio is None:
            # Made on first use: a program that never awaits (``worker run``) does not
            # import asyncio.
            from ._aio import AsyncEngine

            with self._lock:
                if self._aio is None:
                    self._aio = AsyncEngine(self)
                aio = self._aio
        return aio

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self._pm

    @property
    def state_dir(self) -> Path | None:
        """The directory of durable state (``[engine] state_dir``), or None if there is none.

        Made (0700) and locked by :meth:`start` before the ``job_store`` and
        ``output_store`` hooks fire: a store plugin keeps its files under it.
        """
        value = self._settings.state_dir
        return None if value is None else self.config.resolve_path(value)

    def start(self) -> Engine:
        with self._lock:
            if self._started:
                return self
            if self._closed:
                raise EngineClosed("this engine was closed; create a new one")
            try:
                self._open_stores()
            except BaseException:
                # As any failed start: the plugins release what they set up at construction
                # (the cgroups plugin's subtree and its lock), not only the stores.
                self.close()
                raise
            self._exit_is_cheap = not (
                self._pm.hook.signal_job.get_hookimpls() or self._pm.hook.post_exit.get_hookimpls()
            )
            self._timers = TimerQueue()
            # With an executor the cluster holds the resources: this host's size bounds nothing
            # (the running caps still apply).
            host = Host.detect() if self._executor is None else Host.unbounded()
            self._queue = Scheduler(self._settings, host, self.hooks.admit)
            self._finalizer = ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="worker-finalizer"
            )
            self._pump = OutputPump(self._on_output_data, self._on_output_closed)
            self._started = True
        try:
            if self._executor is None:
                self._launchers.start()
            else:
                self._executor.start(_ExecutorEvents(self))
        except BaseException:
            self.close()
            raise
        try:
            self._recover()
            self.hooks.startup(self)
        except BaseException:
            self.close()
            raise
        self._housekeeping()
        return self

    def _open_stores(self) -> None:
        state_dir = self.state_dir
        if state_dir is not None:
            self._state_dir = StateDir.acquire(state_dir)
        self._records = self.hooks.job_store(self)
        if self._records is None:
            raise PluginError("no job store: enable 'memory' (the default) or 'sqlite'")
        self._store = self.hooks.output_store(self)
        self._executor = self.hooks.executor(self)
        if self._executor is not None:
            for name, plugin in self.hooks.plugins():
                if getattr(plugin, "local_only", False):
                    raise PluginError(
                        f"plugin {name!r} acts on this host's processes between fork and exec: "
                        f"it cannot be used with the {self._executor.name!r} executor"
                    )

    def _close_stores(self) -> None:
        # The reference stays: a closed memory store still answers reads (a library user
        # inspecting records after close); a durable one refuses them.
        records = self._records
        if records is not None:
            try:
                records.close()
            except Exception:
                log.exception("closing the job store failed")
        if self._state_dir is not None:
            self._state_dir.release()
            self._state_dir = None

    def _recover(self) -> None:
        """End what an earlier run left running: its processes died with it (the launcher
        kills every job when the engine goes; the cgroups plugin removes leftovers). Jobs
        that were waiting wait again, in their order, as if nothing happened."""
        records = self._job_store()
        waiting: list[TrackedJob] = []
        for job in records.unfinished():
            if job.state in WAITING_STATES:
                entry = TrackedJob(job)
                with self._lock:
                    self._jobs[job.id] = entry
                if self._store is not None:
                    self._store.open(job.id)
                waiting.append(entry)
                continue
            if self._adopt(job):
                continue
            ended = transition(
                job,
                JobState.ENDED,
                end_reason=EndReason.LOST,
                message="the worker stopped while it ran; found at restart",
                ended_at=time.time(),
                queue_reason=None,
            )
            try:
                records.update(ended)
            except StoreUnavailable as exc:
                raise ResourceExhausted(f"recovering job {job.id}: {exc}") from exc
            if self._store is not None:
                self._store.close(job.id)
            log.warning("job %s: %s", job.id, ended.message)
        for entry in waiting:
            if entry.job.state is JobState.QUEUED:
                self._enqueue(entry)
        if waiting:
            log.info("%d waiting jobs queued again", len(waiting))

    def _adopt(self, job: Job) -> bool:
        """After a restart, follow a job the executor still runs; False if it cannot."""
        if self._executor is None or job.external_id is None:
            return False
        if self._store is not None:
            self._store.open(job.id)  # continue its log: the executor hands over more
        offsets = dict(self._store.size(job.id)) if self._store is not None else {}
        entry = TrackedJob(job, spawned=True)
        for stream, size in offsets.items():
            entry.offsets[stream] = size
        with self._lock:
            self._jobs[job.id] = entry
        try:
            known = self._executor.recover(job, offsets)
        except Exception:
            log.exception(
                "job %s: the %s executor failed to recover it", job.id, self._executor.name
            )
            known = False
        if not known:
            with self._lock:
                self._jobs.pop(job.id, None)
            return False
        self._sched().adopt(job)
        if job.spec.timeout is not None and job.state is JobState.RUNNING:
            ran = time.time() - (job.started_at or time.time())
            self._arm_timeout(entry, max(0.0, job.spec.timeout - ran))
        log.info("job %s: still running under %s; following it again", job.id, self._executor.name)
        return True

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, grace: float | None = None) -> None:
        """Stop every job (SIGTERM, ``grace``, SIGKILL), fire ``shutdown``, release all.

        Jobs still running end with reason ``shutdown``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            stopped = self._stop_every(grace, EndReason.SHUTDOWN)
            # Clients still asking while the transports wind down (a `submit --wait` reading
            # how its job ended) get these final records once the store is closed.
            self._final = {job.id: job for job in stopped}
        try:
            # Plugins configured resources at construction (a parent cgroup, a lock): release
            # them even when the engine never started.
            self.hooks.shutdown(self)
        except Exception:
            log.exception("a shutdown hook failed")
        if not started:
            self._close_stores()
            return
        self._launchers.shutdown()
        self._restricted_launchers.shutdown()
        if self._executor is not None:
            try:
                self._executor.close()
            except Exception:
                log.exception("closing the %s executor failed", self._executor.name)
        # Exits reported during shutdown are finalized before the threads go away.
        deadline = time.monotonic() + self._settings.kill_timeout + self._settings.output_linger
        for entry in list(self._jobs.values()):
            self._wait_entry(entry, max(0.0, deadline - time.monotonic()))
        assert self._pump and self._timers and self._finalizer
        if self._aio is not None:
            self._aio.close()
        self._finalizer.shutdown(wait=True)
        self._pump.close()
        self._timers.close()
        self._retry_unsaved()
        self._close_stores()

    def _check_open(self) -> None:
        if not self._started:
            raise EngineClosed(
                "the engine is not started: call start() or use it as a context manager"
            )
        if self._closed:
            raise EngineClosed("the engine is shut down")

    # -------------------------------------------------------------------------------------
    # publishing state
    # -------------------------------------------------------------------------------------

    def _publish(self, entry: TrackedJob, job: Job) -> None:
        """Commit a new snapshot to the job store, then wake waiters. Call with
        ``entry.notifier`` held, then :meth:`_fire_events` after releasing it."""
        self._commit(entry, job)
        if job.state is not entry.job.state:
            entry.events.append((job, entry.job.state))
        entry.job = job
        entry.version += 1
        entry.notifier.notify_all()

    def _move(self, entry: TrackedJob, state: JobState, **changes: Any) -> Job | None:
        """Transition under the entry lock, then fire ``on_state_change`` outside it."""
        with entry.notifier:
            previous = entry.job.state
            if state is previous or previous is JobState.ENDED:
                return None
            job = transition(entry.job, state, **changes)
            self._publish(entry, job)
        self._fire_events(entry)
        return job

    def _commit(self, entry: TrackedJob, job: Job) -> None:
        """Write ``job`` to the store. If it cannot be written now, the engine goes on with the
        snapshot in memory (the job must not stop because a disk is full) and housekeeping
        writes the newest one once the store can commit again."""
        try:
            self._job_store().update(job)
        except StoreUnavailable as exc:
            with self._lock:
                first = not self._unsaved
                self._unsaved[job.id] = entry
            if first:
                log.error("job %s: the job store cannot commit (%s); retrying", job.id, exc)
        else:
            if self._unsaved:
                with self._lock:
                    self._unsaved.pop(job.id, None)
                # The store commits again: write what waited (an ended job's last record)
                # now, not at the next housekeeping round.
                self._retry_unsaved()

    def _forget_ended(self, job_id: str) -> None:
        """An ended job leaves the live table, once its final record is in the store: until
        then the live entry is the only place that knows it ended."""
        with self._lock:
            if job_id not in self._unsaved:
                self._jobs.pop(job_id, None)

    def _retry_unsaved(self) -> None:
        with self._lock:
            pending = list(self._unsaved.items())
        for job_id, entry in pending:
            try:
                self._job_store().update(entry.job)
            except StoreUnavailable:
                return  # still failing; the next round tries again
            with self._lock:
                if self._unsaved.get(job_id) is entry:
                    del self._unsaved[job_id]
                    if entry.job.is_finished:
                        self._jobs.pop(job_id, None)
        if pending:
            log.info("the job store commits again")

    def _housekeeping(self) -> None:
        """Retention, and records that could not be committed; every HOUSEKEEPING_INTERVAL."""
        if self._closed or self._timers is None:
            return
        try:
            self._retry_unsaved()
            self.apply_retention()
        except Exception:
            log.exception("housekeeping failed")
        self._timers.call_later(HOUSEKEEPING_INTERVAL, self._housekeeping)

    def apply_retention(self) -> builtins.list[str]:
        """Remove finished jobs past the configured age, count and output bounds (oldest
        first; unfinished jobs never). Returns the ids removed. Runs by itself periodically."""
        keep = Retention(
            self._settings.max_finished_jobs,
            self._settings.max_finished_age,
            self._settings.max_finished_output_bytes,
        )
        doomed = expired(self._job_store().finished(), keep, time.time())
        self._remove_records(doomed)
        return doomed

    def _remove_records(self, job_ids: Collection[str]) -> None:
        if not job_ids:
            return
        try:
            self._job_store().remove(job_ids)
        except StoreUnavailable as exc:
            raise ResourceExhausted(f"the job store cannot remove records now: {exc}") from exc
        with self._lock:
            for job_id in job_ids:
                entry = self._jobs.get(job_id)
                if entry is not None and entry.job.is_finished:
                    self._jobs.pop(job_id, None)
                    self._unsaved.pop(job_id, None)
        if self._store is not None:
            for job_id in job_ids:
                self._store.discard(job_id)

    def _job_store(self) -> JobStore:
        if self._records is None:
            raise EngineClosed("the engine is not started, or it is closed")
        return self._records

    def _fire_events(self, entry: TrackedJob) -> None:
        """Fire the entry's queued ``on_state_change`` events, in order, outside any lock.

        Transitions happen on several threads; whichever thread finds the queue idle delivers
        every event queued meanwhile, so observers never see ENDED before RUNNING.
        """
        with entry.notifier:
            if entry.firing:
                return
            entry.firing = True
        while True:
            with entry.notifier:
                if not entry.events:
                    entry.firing = False
                    return
                job, previous = entry.events.pop(0)
            for exc in self.hooks.on_state_change(job, previous):
                log.error("job %s: %s", job.id, exc, exc_info=exc)

    # -------------------------------------------------------------------------------------
    # submit
    # -------------------------------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec,
        principal: Principal | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Validate, authorize, record and start (or queue) a job. Returns its record once it
        is committed to the job store: RUNNING, QUEUED (see ``queue_reason``), HELD, or ENDED
        if it failed to start. Bad input raises :class:`InvalidSpec` and leaves nothing
        behind.

        With ``idempotency_key``, a second submit with the same key by the same owner returns
        the first job's current record and starts nothing (across restarts, with a durable
        store).
        """
        self._check_open()
        if not isinstance(spec, JobSpec):
            raise InvalidSpec("spec", f"must be a JobSpec, got {type(spec).__name__}")
        validation.check_strings(spec, self._settings.max_spec_bytes)
        validation.check_labels(spec)
        validation.check_idempotency_key(idempotency_key)
        validation.check_begin(spec)
        cwd = validation.resolve_cwd(spec)
        executable = validation.resolve_command(spec, cwd)
        validation.check_claimed(spec, self.hooks.validate_spec(spec))
        sched = self._sched()
        sched.check_fits(spec)
        if spec.after:
            spec = attrs.evolve(spec, after=self._resolve_dependencies(spec, principal))
        # The record names the owner; how it proved who it is (its certificate) is not kept.
        owner = Principal(principal.name) if principal is not None else None
        job = Job(id=uuid.uuid4().hex, owner=owner, spec=spec, idempotency_key=idempotency_key)
        if principal is not None and not self.hooks.authorize(principal, Action.SUBMIT, job):
            raise PermissionDenied(f"{principal.name!r} may not submit jobs")
        must_wait = spec.hold or bool(spec.after) or not self._begin_due(spec)
        reason = None
        if not must_wait:
            reason = sched.try_start_now(job)
        if spec.hold:
            job = attrs.evolve(job, state=JobState.HELD)
        elif must_wait or reason is not None:
            job = attrs.evolve(job, state=JobState.QUEUED, queue_reason=reason)
        admitted = job.state is JobState.PENDING
        entry = TrackedJob(job, executable=executable, cwd=cwd)
        with self._lock:
            try:
                self._check_open()
                recorded = self._job_store().add(job)
            except StoreUnavailable as exc:
                if admitted:
                    sched.unreserve(job.id)
                raise ResourceExhausted(f"the job store cannot record the job: {exc}") from exc
            except BaseException:
                if admitted:
                    sched.unreserve(job.id)
                raise
            if recorded.id != job.id:  # the same key was used before: that job, not a new one
                if admitted:
                    sched.unreserve(job.id)
                existing = self._jobs.get(recorded.id)
                return existing.job if existing is not None else recorded
            self._jobs[job.id] = entry
        if self._store is not None:
            self._store.open(job.id)
        with entry.notifier:
            entry.events.append((job, None))
        self._fire_events(entry)
        if admitted:
            return self._launch(entry)
        if job.state is JobState.QUEUED:
            self._enqueue(entry)
        return entry.job

    def _begin_due(self, spec: JobSpec) -> bool:
        return spec.begin_at is None or spec.begin_at <= time.time()

    def _sched(self) -> Scheduler:
        if self._queue is None:
            raise EngineClosed("the engine is not started, or it is closed")
        return self._queue

    def _resolve_dependencies(
        self, spec: JobSpec, principal: Principal | None
    ) -> tuple[Dependency, ...]:
        """Each dependency's full id; it must exist and be readable (NOT_FOUND otherwise), so
        the graph is acyclic by construction."""
        resolved: list[Dependency] = []
        for dependency in spec.after:
            if not isinstance(dependency, Dependency):
                raise InvalidSpec("after", f"must be Dependency values, got {dependency!r}")
            try:
                job, _ = self._readable(dependency.job_id, principal)
            except JobNotFound:
                raise JobNotFound(dependency.job_id) from None
            resolved.append(attrs.evolve(dependency, job_id=job.id))
        return tuple(resolved)

    def _enqueue(self, entry: TrackedJob) -> None:
        """Hand a QUEUED job to the scheduler, with what its dependencies have become."""
        job = entry.job
        pairs = []
        for dependency in job.spec.after:
            try:
                record, _ = self._record(dependency.job_id)
            except JobNotFound:
                record = None
            pairs.append((dependency, record))
        begin_due = self._begin_due(job.spec)
        if not begin_due:
            assert job.spec.begin_at is not None and self._timers is not None
            delay = max(0.0, job.spec.begin_at - time.time())
            entry.other_timers.append(
                self._timers.call_later(delay, lambda: self._apply(self._sched().begin_due(job.id)))
            )
        self._apply(self._sched().enqueue(entry, job, pairs, begin_due))
        # A dependency read unfinished above may have ended before the scheduler knew of
        # this job: its end released no one. Read again now that the job is registered
        # (whatever ends from here on releases it), and settle any that ended meanwhile.
        for dependency, record in pairs:
            if record is None or record.is_finished:
                continue
            try:
                now, _ = self._record(dependency.job_id)
            except JobNotFound:
                continue
            if now.is_finished:
                self._apply(self._sched().settled(now))

    def _apply(self, decision: Decision) -> None:
        """Carry out what the scheduler decided: new reasons, failures, starts. Ends of jobs
        that never ran are fed back until nothing moves (a failed chain ends link by link,
        without recursion)."""
        pending = deque([decision])
        while pending:
            current = pending.popleft()
            for item, reason in current.reasons:
                entry = cast(TrackedJob, item)
                if reason is QueueReason.PLUGIN:
                    self._kick_soon()
                with entry.notifier:
                    if entry.job.state is JobState.QUEUED and entry.job.queue_reason is not reason:
                        self._publish(entry, attrs.evolve(entry.job, queue_reason=reason))
                self._fire_events(entry)
            for item, message in current.fail:
                entry = cast(TrackedJob, item)
                ended = self._end_unstarted(entry, EndReason.DEPENDENCY_FAILED, message)
                if ended is not None:
                    pending.append(self._sched().ended(ended))
            for item in current.start:
                entry = cast(TrackedJob, item)
                if self._closed:
                    self._sched().unreserve(entry.job.id)
                    continue
                # Never on the thread that called: that may be the launcher's reader, which
                # must stay free to read the answer to this very spawn.
                self._submit_background(self._start_queued, entry)

    def _kick_soon(self) -> None:
        """Look at the queue again in a while: a plugin's admit hook delayed a job, and only
        asking again tells when it agrees."""
        with self._lock:
            if self._kick_pending or self._timers is None or self._closed:
                return
            self._kick_pending = True

        def kick() -> None:
            with self._lock:
                self._kick_pending = False
            if not self._closed:
                self._apply(self._sched().kick())

        self._timers.call_later(ADMIT_RETRY_SECONDS, kick)

    def _start_queued(self, entry: TrackedJob) -> None:
        with entry.notifier:
            if entry.job.state is not JobState.QUEUED:
                moved = None
            else:
                moved = transition(entry.job, JobState.PENDING, queue_reason=None)
                self._publish(entry, moved)
        if moved is None:  # stopped meanwhile
            self._sched().unreserve(entry.job.id)
            return
        self._fire_events(entry)
        try:
            self._launch(entry)
        except Exception:
            log.exception("job %s: starting it failed", entry.job.id)

    def _end_unstarted(self, entry: TrackedJob, reason: EndReason, message: str) -> Job | None:
        """End a job that never started (stopped while waiting, a dependency failed)."""
        for timer in entry.other_timers:
            timer.cancel()
        ended = self._move(
            entry,
            JobState.ENDED,
            end_reason=reason,
            message=message,
            ended_at=time.time(),
            queue_reason=None,
        )
        if self._store is not None:
            self._store.close(entry.job.id)
        self._forget_ended(entry.job.id)
        return ended

    def _launch(self, entry: TrackedJob) -> Job:
        """Build the admitted (PENDING) job's spawn plan through the plugins and spawn it."""
        job = entry.job
        spec = job.spec
        try:
            cwd = entry.cwd or validation.resolve_cwd(spec)
            executable = entry.executable or validation.resolve_command(spec, cwd)
        except InvalidSpec as exc:
            return self._fail_to_start(entry, str(exc))
        env = {"PATH": validation.DEFAULT_PATH, **spec.env, "WORKER_JOB_ID": job.id}
        plan = SpawnPlan(executable=executable, argv=[spec.command, *spec.args], env=env, cwd=cwd)
        try:
            entry.plan_ran = True
            self.hooks.pre_spawn(job, plan)
            message = plan.to_message()
        except Exception as exc:
            reason = str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, WorkerError):
                log.exception("job %s: a pre_spawn hook failed", job.id)
            return self._fail_to_start(entry, f"preparing the job failed: {reason}")
        if self._executor is not None:
            return self._launch_elsewhere(entry, plan)
        return self._spawn(entry, message)

    def _launch_elsewhere(self, entry: TrackedJob, plan: SpawnPlan) -> Job:
        assert self._executor is not None
        job = entry.job
        try:
            launched = self._executor.launch(job, plan)
        except LaunchFailed as exc:
            return self._fail_to_start(entry, str(exc))
        except Exception as exc:
            log.exception(
                "job %s: the %s executor failed to launch it", job.id, self._executor.name
            )
            return self._fail_to_start(entry, f"{self._executor.name}: {type(exc).__name__}: {exc}")
        with entry.notifier:
            previous = entry.job.state
            started_at = time.time()
            if previous is JobState.PENDING:
                running = transition(
                    entry.job,
                    JobState.RUNNING,
                    started_at=started_at,
                    external_id=launched.external_id,
                )
            else:  # stopped while starting: keep STOPPING, record where it runs
                running = attrs.evolve(
                    entry.job, started_at=started_at, external_id=launched.external_id
                )
            self._publish(entry, running)
            entry.spawned = True
        self._fire_events(entry)
        if previous is not JobState.PENDING:
            self._deliver_stop(entry, self._settings.stop_grace, force=False)
        if job.spec.timeout is not None:
            self._arm_timeout(entry, job.spec.timeout)
        self._maybe_finalize(entry)
        return entry.job

    def _ended_elsewhere(self, job_id: str, end: Ended) -> None:
        """An executor's job ended, all its output handed over."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        with entry.notifier:
            entry.remote_end = end
            if end.lost is not None:
                entry.lost = end.lost
            entry.output_closed = True
        self._maybe_finalize(entry)

    def _spawn(self, entry: TrackedJob, message: dict[str, Any]) -> Job:
        job = entry.job
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (out_r, err_r):
            enlarge_pipe(fd)
        launchers = self._restricted_launchers if restricted_plan(message) else self._launchers
        try:
            launcher = launchers.pick()
            try:
                pid, pidfd = launcher.spawn(job.id, message, out_w, err_w)
            except LauncherDied as first:
                log.warning("job %s: %s; retrying with another launcher", job.id, first)
                launcher = launchers.pick()
                pid, pidfd = launcher.spawn(job.id, message, out_w, err_w)
        except SpawnFailed as exc:
            os.close(out_r)
            os.close(err_r)
            return self._fail_to_start(entry, f"{exc.stage}: {exc.message}")
        except LauncherDied as exc:
            os.close(out_r)
            os.close(err_r)
            return self._fail_to_start(entry, str(exc))
        finally:
            os.close(out_w)
            os.close(err_w)
        assert self._pump is not None
        self._pump.add(job.id, [(out_r, Stream.STDOUT), (err_r, Stream.STDERR)])
        with entry.notifier:
            previous = entry.job.state
            started_at = time.time()
            if previous is JobState.PENDING:
                running = transition(entry.job, JobState.RUNNING, pid=pid, started_at=started_at)
            else:  # stopped while starting: keep STOPPING, record the pid
                running = attrs.evolve(entry.job, pid=pid, started_at=started_at)
            self._publish(entry, running)
            entry.pidfd = pidfd
            entry.launcher = launcher
            entry.spawned = True
        self._fire_events(entry)
        if not launcher.alive:
            # It died after answering, and its death may have been handled before this job
            # was among its own: lost like the others.
            self._lose_with(entry, launcher, "the launcher died as the job started")
        if previous is not JobState.PENDING:
            self._deliver_stop(entry, self._settings.stop_grace, force=False)
        if job.spec.timeout is not None:
            self._arm_timeout(entry, job.spec.timeout)
        self._maybe_finalize(entry)
        return entry.job

    def _fail_to_start(self, entry: TrackedJob, message: str) -> Job:
        with entry.notifier:
            entry.start_error = message
            entry.spawned = True
            entry.output_closed = True
        self._maybe_finalize(entry, inline=True)
        return entry.job

    # -------------------------------------------------------------------------------------
    # exit handling and finalization
    # -------------------------------------------------------------------------------------

    def _on_exit(self, report: ExitReport) -> None:
        """Launcher reader thread: the job's main process was reaped."""
        entry = self._jobs.get(report.job_id)
        if entry is None:
            return
        with entry.notifier:
            entry.exit_report = report
        if self._exit_is_cheap:
            # No plugin cleans up after exit: finishing here saves a thread hop per job.
            self._after_exit(entry)
        else:
            self._submit_background(self._after_exit, entry)

    def _submit_background(self, fn: Any, *args: Any) -> None:
        assert self._finalizer is not None
        try:
            self._finalizer.submit(fn, *args)
        except RuntimeError:  # the pool is shutting down: run here rather than lose it
            fn(*args)

    def _after_exit(self, entry: TrackedJob) -> None:
        # Whatever the job left behind (a daemonized grandchild holding the pipe) dies with it.
        if entry.plan_ran:
            try:
                self.hooks.signal_job(entry.job, signal.SIGKILL)
            except Exception:
                log.exception("job %s: signal_job failed after exit", entry.job.id)
        with entry.notifier:
            output_closed = entry.output_closed
        if not output_closed:
            # Something still holds the pipes open: read what comes for a bounded time, then
            # close them so the job can end.
            assert self._timers is not None and self._pump is not None
            pump, job_id = self._pump, entry.job.id
            timer = self._timers.call_later(
                self._settings.output_linger, lambda: pump.finish(job_id)
            )
            entry.other_timers.append(timer)
        # Already on a finalizer thread: finish here rather than hop to another one.
        self._maybe_finalize(entry, inline=True)

    def _on_launcher_death(self, launcher: LauncherClient, reason: str) -> None:
        """Reader thread: a launcher is gone; its jobs are killed and marked lost."""
        log.error("%s; killing and marking its running jobs as lost", reason)
        for entry in list(self._jobs.values()):
            self._lose_with(entry, launcher, reason)

    def _lose_with(self, entry: TrackedJob, launcher: LauncherClient, reason: str) -> None:
        """Kill and mark lost a job that ``launcher`` started and had not yet seen end; once
        only, whichever of the launcher's death and the job's spawn gets here first."""
        with entry.notifier:
            if (
                entry.launcher is not launcher
                or not entry.spawned
                or entry.exit_report is not None
                or entry.start_error
                or entry.lost is not None
                or entry.job.is_finished
            ):
                return
            entry.lost = reason
            # A posix_spawn'd job has no parent-death signal: kill it here, through the
            # pidfd (closed only by _finalize, so still valid).
            if entry.pidfd is not None and entry.job.pid is not None:
                _kill_orphaned(entry.pidfd, entry.job.pid)
        self._submit_background(self._after_exit, entry)

    def _on_output_closed(self, job_id: str) -> None:
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        with entry.notifier:
            entry.output_closed = True
        self._maybe_finalize(entry)

    def _maybe_finalize(self, entry: TrackedJob, inline: bool = False) -> None:
        with entry.notifier:
            ready = (
                entry.spawned
                and entry.output_closed
                and (
                    entry.exit_report is not None
                    or entry.remote_end is not None
                    or entry.start_error is not None
                    or entry.lost is not None
                )
                and not entry.finalizing
            )
            if not ready:
                return
            entry.finalizing = True
        if inline:
            self._finalize(entry)
        else:
            self._submit_background(self._finalize, entry)

    def _finalize(self, entry: TrackedJob) -> None:
        report, remote = entry.exit_report, entry.remote_end
        if remote is not None:
            result = ExitResult(
                exit_code=remote.exit_code,
                signal=remote.signal,
                cpu_seconds=remote.cpu_seconds,
                oom_killed=remote.oom_killed,
                facts=dict(remote.facts),
            )
        else:
            result = ExitResult(
                exit_code=report.exit_code if report else None,
                signal=report.signal if report else None,
                cpu_seconds=report.cpu_seconds if report else None,
                max_rss_bytes=report.max_rss_bytes if report else None,
            )
        job = entry.job
        if entry.plan_ran:
            for exc in self.hooks.post_exit(job, result):
                log.error("job %s: %s", job.id, exc, exc_info=exc)
        for timer in [*entry.other_timers, entry.kill_timer, entry.timeout_timer]:
            if timer is not None:
                timer.cancel()
        with entry.notifier:
            pidfd, entry.pidfd = entry.pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        facts = {**result.facts, "oom_killed": result.oom_killed}
        if result.cpu_seconds is not None:
            facts.setdefault("cpu_seconds", round(result.cpu_seconds, 6))
        facts[OUTPUT_BYTES_FACT] = sum(entry.offsets.values())
        if entry.lost_bytes:
            facts["output_lost_bytes"] = entry.lost_bytes
        reason, message = end_reason(
            result,
            start_error=entry.start_error,
            lost=entry.lost,
            stop_reason=entry.stop_reason,
            timeout=job.spec.timeout,
        )
        ended = self._move(
            entry,
            JobState.ENDED,
            exit_code=result.exit_code,
            signal=result.signal,
            end_reason=reason,
            message=message,
            ended_at=time.time(),
            facts=facts,
            queue_reason=None,
        )
        if self._store is not None:
            self._store.close(job.id)
        if ended is not None:
            self._forget_ended(job.id)
            if self._queue is not None:
                self._apply(self._queue.ended(ended))

    # -------------------------------------------------------------------------------------
    # output
    # -------------------------------------------------------------------------------------

    def _on_output_data(self, job_id: str, stream: Stream, data: bytes) -> None:
        """Output thread: one read from a job's pipe. The store keeps it, then observers see it."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        offset = entry.offsets[stream]
        entry.offsets[stream] = offset + len(data)
        chunk = Chunk(job_id, stream, offset, data)
        if self._store is not None:
            try:
                lost = self._store.append(chunk)
            except Exception:
                log.exception("job %s: the output store failed to keep %d bytes", job_id, len(data))
                lost = len(data)
            if lost:
                entry.lost_bytes += lost
        for exc in self.hooks.on_output(entry.job, chunk):
            log.error("job %s: %s", job_id, exc, exc_info=exc)

    def follow(
        self,
        job_id: str,
        streams: Collection[Stream] = BOTH_STREAMS,
        start: StartPosition = StartAt.BEGINNING,
        principal: Principal | None = None,
    ) -> Follower:
        """A follower of the job's output from ``start``; it ends when the job has ended and
        everything was read."""
        job_id = self._readable(job_id, principal)[0].id
        streams = frozenset(streams)
        if not streams:
            raise InvalidSpec("streams", "choose stdout, stderr or both")
        if not isinstance(start, StartAt):
            for stream, offset in start.items():
                if not isinstance(offset, int) or offset < 0:
                    raise InvalidSpec(
                        "start", f"offset for {stream.value} must be a non-negative integer"
                    )
        return self._output_store().follow(job_id, streams, start)

    def output(
        self, job_id: str, stream: Stream = Stream.STDOUT, principal: Principal | None = None
    ) -> bytes:
        """Everything the job has written to ``stream`` so far."""
        job_id = self._readable(job_id, principal)[0].id
        follower = self._output_store().follow(job_id, frozenset({stream}), StartAt.BEGINNING)
        parts: list[bytes] = []
        try:
            target = self._output_store().size(job_id).get(stream, 0)
            got = 0
            while got < target:
                chunks = follower.read(timeout=0)
                if not chunks:
                    break
                for chunk in chunks:
                    parts.append(chunk.data)
                    got += len(chunk.data)
        finally:
            follower.close()
        return b"".join(parts)

    def output_size(self, job_id: str, principal: Principal | None = None) -> dict[Stream, int]:
        """Bytes the job has written so far to each stream."""
        job_id = self._readable(job_id, principal)[0].id
        return dict(self._output_store().size(job_id))

    def _output_store(self) -> OutputStore:
        if self._store is None:
            raise EngineClosed(
                "no output store: the engine is not started, or 'no:memory' left none"
            )
        return self._store

    # -------------------------------------------------------------------------------------
    # reading records
    # -------------------------------------------------------------------------------------

    def _record(self, job_id: str) -> tuple[Job, TrackedJob | None]:
        """The newest record of ``job_id`` (a full id or a unique prefix) and its live entry
        (None once it has ended)."""
        if not isinstance(job_id, str):
            raise JobNotFound(str(job_id))
        entry = self._jobs.get(job_id)
        if entry is not None:
            return entry.job, entry
        final = self._final.get(job_id)
        if final is not None:
            return final, None
        try:
            job = self._job_store().get(job_id)
        except StoreUnavailable as exc:
            raise EngineClosed(f"the job store cannot be read now: {exc}") from exc
        except Exception as exc:
            if not self._closed:
                raise
            raise EngineClosed("the worker is shutting down") from exc
        if job is None:
            raise JobNotFound(job_id)
        entry = self._jobs.get(job_id)  # it may have ended (and left _jobs) meanwhile
        return (entry.job, entry) if entry is not None else (job, None)

    def resolve_id(self, job_id: str, principal: Principal | None = None) -> str:
        """The full id of the job ``job_id`` names: itself, or the one job it is a prefix of
        among those ``principal`` may read. :class:`AmbiguousJobId` lists the candidates."""
        if not isinstance(job_id, str) or not job_id:
            raise JobNotFound(str(job_id))
        if job_id in self._jobs or len(job_id) >= 32:
            return job_id
        if not all(c in "0123456789abcdef" for c in job_id):
            raise JobNotFound(job_id)
        if len(job_id) < MIN_ID_PREFIX:
            raise InvalidSpec(
                "job_id", f"a job id prefix needs at least {MIN_ID_PREFIX} characters"
            )
        candidates = [
            found
            for found in self._job_store().ids_with_prefix(job_id, 50)
            if principal is None or self._may_read(principal, found)
        ]
        if not candidates:
            raise JobNotFound(job_id)
        if len(candidates) > 1:
            raise AmbiguousJobId(job_id, sorted(candidates)[:10])
        return candidates[0]

    def _may_read(self, principal: Principal, job_id: str) -> bool:
        try:
            job, _ = self._record(job_id)
        except JobNotFound:
            return False
        return self.hooks.authorize(principal, Action.READ, job)

    def _readable(self, job_id: str, principal: Principal | None) -> tuple[Job, TrackedJob | None]:
        job_id = self.resolve_id(job_id, principal)
        job, entry = self._record(job_id)
        if principal is not None and not self.hooks.authorize(principal, Action.READ, job):
            raise JobNotFound(job_id)  # not PERMISSION_DENIED: ids cannot be probed
        return job, entry

    def _live_entry(self, job_id: str) -> TrackedJob | None:
        return self._jobs.get(job_id)

    def _readable_entry(self, job_id: str, principal: Principal | None) -> TrackedJob:
        """A live entry to wait on; for a job that has ended, a finished stand-in."""
        job, entry = self._readable(job_id, principal)
        return entry if entry is not None else TrackedJob(job)

    def get(self, job_id: str, principal: Principal | None = None) -> Job:
        """The job's newest record. ``job_id`` may be a unique prefix of at least
        :data:`MIN_ID_PREFIX` characters."""
        return self._readable(job_id, principal)[0]

    def list(
        self,
        principal: Principal | None = None,
        states: Collection[JobState] | None = None,
        owner: str | None = None,
    ) -> builtins.list[Job]:
        """Every job ``principal`` may read, in submission order (all pages of
        :meth:`list_page`: prefer that for large histories)."""
        jobs: builtins.list[Job] = []
        token = ""
        while True:
            page = self.list_page(
                JobQuery(states=frozenset(states or ()), owner=owner),
                principal=principal,
                page_size=MAX_PAGE_SIZE,
                page_token=token,
            )
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
        jobs.reverse()
        return jobs

    def list_page(
        self,
        query: JobQuery | None = None,
        principal: Principal | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> JobPage:
        """One page of the jobs matching ``query`` that ``principal`` may read, newest first.

        Pass the returned ``next_page_token`` to get the next page; jobs submitted meanwhile
        never appear in later pages, so none is skipped or repeated. A page may hold fewer
        than ``page_size`` jobs when most records scanned were not readable.
        """
        query = query or JobQuery()
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 0:
            raise InvalidSpec("page_size", f"must be a non-negative integer, got {page_size!r}")
        size = min(page_size or 100, MAX_PAGE_SIZE)
        before = decode_token(page_token) if page_token else None
        if principal is not None and not self.hooks.authorize(principal, Action.READ, None):
            return JobPage([], "")
        jobs: builtins.list[Job] = []
        scanned = 0
        exhausted = False
        # Bounded work per call: at most ten pages' worth of records are looked at.
        while len(jobs) < size and scanned < 10 * size:
            want = size - len(jobs)
            batch = self._job_store().query(attrs.evolve(query, before_seq=before, limit=want))
            for stored in batch:
                before = stored.seq
                scanned += 1
                job = stored.job
                live = self._jobs.get(job.id)
                if live is not None:
                    job = live.job
                if principal is None or self.hooks.authorize(principal, Action.READ, job):
                    jobs.append(job)
            if len(batch) < want:
                exhausted = True
                break
        more = (
            not exhausted
            and before is not None
            and bool(self._job_store().query(attrs.evolve(query, before_seq=before, limit=1)))
        )
        return JobPage(jobs, encode_token(before) if more and before is not None else "")

    def wait(
        self, job_id: str, timeout: float | None = None, principal: Principal | None = None
    ) -> Job:
        """Block until the job has ended or ``timeout`` passed; return its latest record."""
        entry = self._readable_entry(job_id, principal)
        self._wait_entry(entry, timeout)
        return entry.job

    def _wait_entry(self, entry: TrackedJob, timeout: float | None) -> bool:
        return entry.notifier.wait_for(lambda: entry.job.is_finished or None, timeout) is not None

    def watch(self, job_id: str, principal: Principal | None = None) -> JobWatcher:
        """Every new record of the job, from the current one until it has ENDED."""
        return JobWatcher(self._readable_entry(job_id, principal))

    # -------------------------------------------------------------------------------------
    # stop
    # -------------------------------------------------------------------------------------

    def stop(
        self,
        job_id: str,
        principal: Principal | None = None,
        grace: float | None = None,
        force: bool = False,
        timeout: float | None = None,
    ) -> Job:
        """SIGTERM to the whole job, ``grace`` seconds, then SIGKILL (at once with ``force``).

        Blocks until the job has ended or ``timeout`` passed (default: grace plus the
        engine's kill timeout and output linger). Stopping a finished job returns its record.
        """
        entry, grace = self._begin_stop(job_id, principal, grace, force)
        if timeout is None:
            timeout = self._stop_wait(grace)
        self._wait_entry(entry, timeout)
        return entry.job

    def _stop_wait(self, grace: float) -> float:
        """How long a stop waits by default: the grace period, the SIGKILL, the output linger."""
        return grace + self._settings.kill_timeout + self._settings.output_linger + 1.0

    def _begin_stop(
        self, job_id: str, principal: Principal | None, grace: float | None, force: bool
    ) -> tuple[TrackedJob, float]:
        job, live = self._readable(job_id, principal)
        if principal is not None and not self.hooks.authorize(principal, Action.STOP, job):
            raise PermissionDenied(f"{principal.name!r} may not stop job {job.id}")
        entry = live if live is not None else TrackedJob(job)
        if grace is None:
            grace = self._settings.stop_grace
        if not (math.isfinite(grace) and grace >= 0):
            raise InvalidSpec("grace", f"must be a finite number >= 0, got {grace}")
        self._request_stop(entry, EndReason.STOPPED, grace, force)
        return entry, grace

    def _request_stop(
        self, entry: TrackedJob, reason: EndReason, grace: float, force: bool
    ) -> None:
        if entry.job.state in WAITING_STATES and self._stop_waiting(entry, reason):
            return
        if entry.job.state is JobState.PAUSED:
            self._freeze(entry, frozen=False)  # a frozen job cannot act on SIGTERM
        # The state move and the "spawned yet?" check happen under one lock, against _spawn's:
        # exactly one of the two delivers the first stop.
        with entry.notifier:
            if entry.job.is_finished:
                return
            first = entry.stop_reason is None
            if first:
                entry.stop_reason = reason
            previous = entry.job.state
            moved = None
            if previous is not JobState.STOPPING:
                moved = transition(entry.job, JobState.STOPPING)
                self._publish(entry, moved)
            spawned = entry.spawned
        if moved is not None:
            self._fire_events(entry)
        if not first and not force:
            return  # already stopping: the first request's escalation stands
        if spawned:
            self._deliver_stop(entry, grace, force)
        # Not spawned yet: _spawn sees STOPPING and delivers the stop once the pid exists.

    def _deliver_stop(self, entry: TrackedJob, grace: float, force: bool) -> None:
        if force or grace == 0:
            self._signal(entry, signal.SIGKILL)
            return
        self._signal(entry, signal.SIGTERM)
        assert self._timers is not None
        with entry.notifier:
            if entry.kill_timer is None and not entry.job.is_finished:
                entry.kill_timer = self._timers.call_later(grace, lambda: self._escalate(entry))

    def _escalate(self, entry: TrackedJob) -> None:
        if not entry.job.is_finished and entry.exit_report is None:
            log.info("job %s: still running after its grace period; sending SIGKILL", entry.job.id)
            self._signal(entry, signal.SIGKILL)

    def _signal(self, entry: TrackedJob, signum: int) -> None:
        job = entry.job
        if self._executor is not None:
            if entry.spawned and not job.is_finished and job.external_id is not None:
                try:
                    self._executor.signal(job, signum)
                except Exception:
                    log.exception(
                        "job %s: the %s executor failed to signal it", job.id, self._executor.name
                    )
            return
        if job.is_finished or job.pid is None:
            return
        try:
            if self.hooks.signal_job(job, signum):
                return
        except Exception:
            log.exception(
                "job %s: signal_job hook failed; falling back to the process group", job.id
            )
        launcher = entry.launcher
        if launcher is not None and launcher.alive:
            launcher.signal(job.pid, signum)

    def _stop_waiting(self, entry: TrackedJob, reason: EndReason) -> bool:
        """End a job that has not started; False if it started meanwhile."""
        if not self._sched().remove(entry.job.id) and entry.job.state is not JobState.HELD:
            return entry.job.is_finished  # admitted meanwhile: stop it the usual way
        with entry.notifier:
            if entry.job.state not in WAITING_STATES:
                return entry.job.is_finished
        message = (
            "stopped before it started"
            if reason is EndReason.STOPPED
            else "the worker shut down before it started"
        )
        ended = self._end_unstarted(entry, reason, message)
        if ended is not None:
            self._apply(self._sched().ended(ended))
        return True

    def _arm_timeout(self, entry: TrackedJob, seconds: float) -> None:
        assert self._timers is not None
        with entry.notifier:
            entry.timeout_deadline = time.monotonic() + seconds
            entry.timeout_timer = self._timers.call_later(seconds, lambda: self._time_out(entry))

    def _time_out(self, entry: TrackedJob) -> None:
        if not entry.job.is_finished:
            log.info("job %s: ran past its time limit; stopping it", entry.job.id)
            self._request_stop(entry, EndReason.TIMED_OUT, self._settings.stop_grace, force=False)

    def stop_all(self, grace: float | None = None) -> builtins.list[Job]:
        """Stop every unfinished job at once and wait for them all (bounded)."""
        return self._stop_every(grace, EndReason.STOPPED)

    def _stop_every(self, grace: float | None, reason: EndReason) -> builtins.list[Job]:
        if grace is None:
            grace = self._settings.stop_grace
        with self._lock:
            entries = [
                e
                for e in self._jobs.values()
                if not e.job.is_finished
                and not (reason is EndReason.SHUTDOWN and e.job.state in WAITING_STATES)
            ]
        for entry in entries:
            self._request_stop(entry, reason, grace, force=False)
        deadline = time.monotonic() + self._stop_wait(grace)
        for entry in entries:
            self._wait_entry(entry, max(0.0, deadline - time.monotonic()))
        return [entry.job for entry in entries]

    # -------------------------------------------------------------------------------------
    # signals, pause, resume, release, usage
    # -------------------------------------------------------------------------------------

    def _controllable(
        self, job_id: str, principal: Principal | None, states: Collection[JobState], verb: str
    ) -> TrackedJob:
        job, entry = self._readable(job_id, principal)
        if principal is not None and not self.hooks.authorize(principal, Action.STOP, job):
            raise PermissionDenied(f"{principal.name!r} may not {verb} job {job.id}")
        if entry is None or entry.job.state not in states:
            state = (entry.job if entry else job).state.value
            wanted = " or ".join(s.value for s in states)
            raise FailedPrecondition(f"job {job.id} is {state}: only a {wanted} job can be {verb}")
        return entry

    def signal(self, job_id: str, signum: int, principal: Principal | None = None) -> Job:
        """Deliver ``signum`` to every process of a running or paused job (its cgroup with
        ``cgroups``; its process group and descendants otherwise). Needs STOP permission."""
        if isinstance(signum, bool) or not isinstance(signum, int) or signum not in _SIGNALS:
            raise InvalidSpec("signal", f"no such signal: {signum!r}")
        entry = self._controllable(
            job_id, principal, (JobState.RUNNING, JobState.PAUSED, JobState.STOPPING), "signalled"
        )
        self._signal(entry, signum)
        return entry.job

    def pause(self, job_id: str, principal: Principal | None = None) -> Job:
        """Freeze every process of a running job; its time limit stops running meanwhile."""
        entry = self._controllable(job_id, principal, (JobState.RUNNING,), "paused")
        with entry.notifier:
            timer, entry.timeout_timer = entry.timeout_timer, None
            if timer is not None and entry.timeout_deadline is not None:
                timer.cancel()
                entry.timeout_left = max(0.0, entry.timeout_deadline - time.monotonic())
        self._freeze(entry, frozen=True)
        moved = None
        with entry.notifier:
            if entry.job.state is JobState.RUNNING:
                moved = transition(entry.job, JobState.PAUSED)
                self._publish(entry, moved)
        if moved is None:  # it ended or is being stopped: undo the freeze
            self._freeze(entry, frozen=False)
        self._fire_events(entry)
        return entry.job

    def resume(self, job_id: str, principal: Principal | None = None) -> Job:
        """Thaw a paused job; its time limit runs on from where it was paused."""
        entry = self._controllable(job_id, principal, (JobState.PAUSED,), "resumed")
        self._freeze(entry, frozen=False)
        with entry.notifier:
            if entry.job.state is JobState.PAUSED:
                self._publish(entry, transition(entry.job, JobState.RUNNING))
            left, entry.timeout_left = entry.timeout_left, None
        self._fire_events(entry)
        if left is not None:
            self._arm_timeout(entry, left)
        return entry.job

    def _freeze(self, entry: TrackedJob, frozen: bool) -> None:
        job = entry.job
        if self._executor is not None:
            self._executor.freeze(job, frozen)
            return
        try:
            if self.hooks.freeze_job(job, frozen):
                return
        except Exception:
            log.exception("job %s: freeze_job failed; using signals", job.id)
        launcher = entry.launcher
        if job.pid is not None and launcher is not None and launcher.alive:
            launcher.signal(job.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def release(self, job_id: str, principal: Principal | None = None) -> Job:
        """Let a held job be scheduled. Its owner may release it if they may submit; anyone
        who may stop it may too."""
        job, entry = self._readable(job_id, principal)
        if principal is not None:
            own = job.owner_name == principal.name and self.hooks.authorize(
                principal, Action.SUBMIT, job
            )
            if not own and not self.hooks.authorize(principal, Action.STOP, job):
                raise PermissionDenied(f"{principal.name!r} may not release job {job.id}")
        moved = None
        if entry is not None:
            with entry.notifier:
                if entry.job.state is JobState.HELD:
                    moved = transition(entry.job, JobState.QUEUED)
                    self._publish(entry, moved)
        if moved is None or entry is None:
            state = (entry.job if entry else job).state.value
            raise FailedPrecondition(f"job {job.id} is {state}: only a held job can be released")
        self._fire_events(entry)
        self._enqueue(entry)
        return entry.job

    def usage(self, job_id: str, principal: Principal | None = None) -> dict[str, int | float]:
        """What a running or paused job uses now (``cpu_seconds``, ``memory_current``), from
        a plugin that can tell (``cgroups``); empty for other jobs."""
        job, entry = self._readable(job_id, principal)
        if entry is None or entry.job.state not in ACTIVE_STATES or entry.job.pid is None:
            return {}
        try:
            return dict(self.hooks.job_usage(entry.job) or {})
        except Exception:
            log.exception("job %s: job_usage failed", job.id)
            return {}

    @property
    def queue_depth(self) -> int:
        """Jobs waiting in the queue (QUEUED, not HELD)."""
        return self._queue.queued if self._queue is not None else 0

    # -------------------------------------------------------------------------------------
    # purge
    # -------------------------------------------------------------------------------------

    def purge(
        self, job_ids: Sequence[str], principal: Principal | None = None
    ) -> builtins.list[str]:
        """Remove finished jobs' records and output; returns the full ids removed.

        All or nothing: an unknown or unreadable id is :class:`JobNotFound`, a job not yet
        ended :class:`FailedPrecondition`, one the caller may not purge
        :class:`PermissionDenied`, and then nothing is removed.
        """
        self._check_open()
        doomed: builtins.list[str] = []
        for given in job_ids:
            job, _ = self._readable(given, principal)
            if not job.is_finished:
                raise FailedPrecondition(
                    f"job {job.id} is {job.state.value}: stop it before purging it"
                )
            if principal is not None and not self.hooks.authorize(principal, Action.PURGE, job):
                raise PermissionDenied(f"{principal.name!r} may not purge job {job.id}")
            if job.id not in doomed:
                doomed.append(job.id)
        self._remove_records(doomed)
        return doomed

    def purge_matching(
        self, query: JobQuery, principal: Principal | None = None
    ) -> builtins.list[str]:
        """Remove every finished job matching ``query`` that ``principal`` may purge."""
        self._check_open()
        query = attrs.evolve(query, states=frozenset({JobState.ENDED}))
        doomed: builtins.list[str] = []
        before: int | None = None
        while True:
            batch = self._job_store().query(attrs.evolve(query, before_seq=before, limit=500))
            for stored in batch:
                before = stored.seq
                job = stored.job
                if principal is None or (
                    self.hooks.authorize(principal, Action.READ, job)
                    and self.hooks.authorize(principal, Action.PURGE, job)
                ):
                    doomed.append(job.id)
            if len(batch) < 500:
                break
        self._remove_records(doomed)
        return doomed


class _ExecutorEvents:
    """What an executor calls back: the engine's output path and end of a job."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def output(self, job_id: str, stream: Stream, data: bytes) -> None:
        self._engine._on_output_data(job_id, stream, data)

    def ended(self, job_id: str, end: Ended) -> None:
        self._engine._ended_elsewhere(job_id, end)


def _kill_orphaned(pidfd: int, pid: int) -> None:
    """Kill a job whose launcher died: its main process through the pidfd, its group while
    the pidfd shows the leader alive (so the group id is still the job's)."""
    with contextlib.suppress(ProcessLookupError, OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


__all__ = ["AsyncEngine", "Engine", "JobPage", "JobWatcher"]
