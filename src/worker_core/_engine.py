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
from collections import OrderedDict
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pluggy

from . import _plugins as plugin_loading
from . import _validation as validation
from ._aio import AsyncEngine
from ._config import Config
from ._errors import EngineClosed, InvalidSpec, JobNotFound, PermissionDenied, WorkerError
from ._launcher import ExitReport, LauncherClient, LauncherDied, SpawnFailed
from ._model import Action, EndReason, ExitResult, Job, JobSpec, JobState, Principal, transition
from ._output import BOTH_STREAMS, Chunk, Follower, OutputStore, StartAt, StartPosition, Stream
from ._plan import SpawnPlan
from ._pump import OutputPump, enlarge_pipe
from ._timers import TimerQueue
from ._tracked import TrackedJob
from ._watch import JobWatcher

log = logging.getLogger("worker.engine")


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
        self._jobs: OrderedDict[str, TrackedJob] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._started = False
        self._closed = False
        self._launcher: LauncherClient | None = None
        self._launcher_lock = threading.Lock()
        self._store: OutputStore | None = None
        self._exit_is_cheap = False
        self._pump: OutputPump | None = None
        self._scheduler: TimerQueue | None = None
        self._finalizer: ThreadPoolExecutor | None = None
        self.aio = AsyncEngine(self)

    # -------------------------------------------------------------------------------------
    # lifecycle
    # -------------------------------------------------------------------------------------

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
            self._store = self.hooks.output_store(self)
            self._exit_is_cheap = not (
                self._pm.hook.signal_job.get_hookimpls() or self._pm.hook.post_exit.get_hookimpls()
            )
            self._scheduler = TimerQueue()
            self._finalizer = ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="worker-finalizer"
            )
            self._pump = OutputPump(self._on_output_data, self._on_output_closed)
            self._launcher = self._start_launcher()
            self._started = True
        try:
            self.hooks.startup(self)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, grace: float | None = None) -> None:
        """Stop every job (SIGTERM, ``grace``, SIGKILL), fire ``shutdown``, release all."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            self.stop_all(grace)
        try:
            # Plugins configured resources at construction (a parent cgroup, a lock): release
            # them even when the engine never started.
            self.hooks.shutdown(self)
        except Exception:
            log.exception("a shutdown hook failed")
        if not started:
            return
        if self._launcher is not None:
            self._launcher.shutdown()
        # Exits reported during shutdown are finalized before the threads go away.
        deadline = time.monotonic() + self._settings.kill_timeout + self._settings.output_linger
        for entry in list(self._jobs.values()):
            self._wait_entry(entry, max(0.0, deadline - time.monotonic()))
        assert self._pump and self._scheduler and self._finalizer
        self.aio.close()
        self._finalizer.shutdown(wait=True)
        self._pump.close()
        self._scheduler.close()

    def _start_launcher(self) -> LauncherClient:
        return LauncherClient(
            self._on_exit, self._on_launcher_death, self._settings.launcher_timeout
        )

    def _live_launcher(self) -> LauncherClient:
        """The launcher, restarted if it died (its jobs were already marked LOST)."""
        with self._launcher_lock:
            if self._launcher is None or not self._launcher.alive:
                log.warning("starting a new launcher")
                self._launcher = self._start_launcher()
            return self._launcher

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
        """Store a new snapshot and wake waiters. Call with ``entry.notifier`` held, then
        :meth:`_fire_events` after releasing it."""
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
                job, previous = entry.events.popleft()
            for exc in self.hooks.on_state_change(job, previous):
                log.error("job %s: an on_state_change hook failed: %r", job.id, exc)

    # -------------------------------------------------------------------------------------
    # submit
    # -------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, principal: Principal | None = None) -> Job:
        """Validate, authorize and start a job. Returns its record (RUNNING, or ENDED if it
        failed to start). Bad input raises :class:`InvalidSpec` and leaves nothing behind."""
        self._check_open()
        if not isinstance(spec, JobSpec):
            raise InvalidSpec("spec", f"must be a JobSpec, got {type(spec).__name__}")
        validation.check_strings(spec, self._settings.max_spec_bytes)
        cwd = validation.resolve_cwd(spec)
        executable = validation.resolve_command(spec, cwd)
        validation.check_claimed(spec, self.hooks.validate_spec(spec))
        job = Job(id=uuid.uuid4().hex, owner=principal, spec=spec)
        if principal is not None and not self.hooks.authorize(principal, Action.SUBMIT, job):
            raise PermissionDenied(f"{principal.name!r} may not submit jobs")
        entry = TrackedJob(job)
        with self._lock:
            self._check_open()
            self._jobs[job.id] = entry
        with entry.notifier:
            entry.events.append((job, None))
        self._fire_events(entry)

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
        return self._spawn(entry, message)

    def _spawn(self, entry: TrackedJob, message: dict[str, Any]) -> Job:
        job = entry.job
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (out_r, err_r):
            enlarge_pipe(fd)
        try:
            try:
                pid, pidfd = self._live_launcher().spawn(job.id, message, out_w, err_w)
            except LauncherDied as first:
                log.warning("job %s: %s; retrying with a new launcher", job.id, first)
                pid, pidfd = self._live_launcher().spawn(job.id, message, out_w, err_w)
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
            entry.spawned = True
        self._fire_events(entry)
        if previous is not JobState.PENDING:
            self._deliver_stop(entry, self._settings.stop_grace, force=False)
        if job.spec.timeout is not None:
            assert self._scheduler is not None
            entry.other_timers.append(
                self._scheduler.call_later(job.spec.timeout, lambda: self._time_out(entry))
            )
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
            assert self._scheduler is not None and self._pump is not None
            pump, job_id = self._pump, entry.job.id
            timer = self._scheduler.call_later(
                self._settings.output_linger, lambda: pump.finish(job_id)
            )
            entry.other_timers.append(timer)
        # Already on a finalizer thread: finish here rather than hop to another one.
        self._maybe_finalize(entry, inline=True)

    def _on_launcher_death(self, reason: str) -> None:
        """Reader thread: the launcher is gone; its jobs are killed and marked lost."""
        log.error("%s; killing and marking its running jobs as lost", reason)
        for entry in list(self._jobs.values()):
            with entry.notifier:
                if (
                    not entry.spawned
                    or entry.exit_report is not None
                    or entry.start_error
                    or entry.job.is_finished
                ):
                    continue
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
        report = entry.exit_report
        result = ExitResult(
            exit_code=report.exit_code if report else None,
            signal=report.signal if report else None,
            cpu_seconds=report.cpu_seconds if report else None,
            max_rss_bytes=report.max_rss_bytes if report else None,
        )
        job = entry.job
        if entry.plan_ran:
            for exc in self.hooks.post_exit(job, result):
                log.error("job %s: a post_exit hook failed: %s", job.id, exc)
        for timer in [*entry.other_timers, *([entry.kill_timer] if entry.kill_timer else [])]:
            timer.cancel()
        with entry.notifier:
            pidfd, entry.pidfd = entry.pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        facts = {**result.facts, "oom_killed": result.oom_killed}
        if result.cpu_seconds is not None:
            facts.setdefault("cpu_seconds", round(result.cpu_seconds, 6))
        if entry.start_error is not None:
            reason, message = EndReason.FAILED_TO_START, entry.start_error
        elif entry.lost is not None:
            reason, message = EndReason.LOST, entry.lost
        elif result.oom_killed and result.signal == signal.SIGKILL:
            # Only when the job itself died of it: a grandchild's OOM kill is a fact, not the end.
            reason, message = (
                EndReason.OOM_KILLED,
                "killed by the OOM killer (memory limit reached)",
            )
        elif entry.stop_reason is not None:
            reason = entry.stop_reason
            message = (
                "stopped on request"
                if reason is EndReason.STOPPED
                else f"ran past its {job.spec.timeout:g}s time limit"
            )
        else:
            reason = EndReason.EXITED
            message = (
                f"exited with code {result.exit_code}"
                if result.exit_code is not None
                else f"killed by signal {result.signal} ({_signal_name(result.signal)})"
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
        )
        if ended is not None:
            self._remember_finished(entry.job.id)

    def _remember_finished(self, job_id: str) -> None:
        with self._lock:
            self._finished[job_id] = None
            while len(self._finished) > self._settings.max_finished_jobs:
                old, _ = self._finished.popitem(last=False)
                self._jobs.pop(old, None)
                if self._store is not None:
                    self._store.discard(old)

    # -------------------------------------------------------------------------------------
    # output
    # -------------------------------------------------------------------------------------

    def _on_output_data(self, job_id: str, stream: Stream, data: bytes) -> None:
        """Output thread: one read from a job's pipe."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        offset = entry.offsets[stream]
        entry.offsets[stream] = offset + len(data)
        for exc in self.hooks.on_output(entry.job, Chunk(job_id, stream, offset, data)):
            log.error("job %s: an on_output hook failed: %r", job_id, exc)

    def follow(
        self,
        job_id: str,
        streams: Collection[Stream] = BOTH_STREAMS,
        start: StartPosition = StartAt.BEGINNING,
        principal: Principal | None = None,
    ) -> Follower:
        """A follower of the job's output from ``start``; it ends when the job has ended and
        everything was read."""
        self._readable(job_id, principal)
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
        self._readable(job_id, principal)
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
        self._readable(job_id, principal)
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

    def _entry(self, job_id: str) -> TrackedJob:
        entry = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if entry is None:
            raise JobNotFound(str(job_id))
        return entry

    def _readable(self, job_id: str, principal: Principal | None) -> TrackedJob:
        entry = self._entry(job_id)
        if principal is not None and not self.hooks.authorize(principal, Action.READ, entry.job):
            raise JobNotFound(job_id)  # not PERMISSION_DENIED: ids cannot be probed
        return entry

    def get(self, job_id: str, principal: Principal | None = None) -> Job:
        return self._readable(job_id, principal).job

    def list(
        self,
        principal: Principal | None = None,
        states: Collection[JobState] | None = None,
        owner: str | None = None,
    ) -> list[Job]:
        """Jobs in submission order, only those ``principal`` may read."""
        with self._lock:
            jobs = [entry.job for entry in self._jobs.values()]
        if states:
            jobs = [job for job in jobs if job.state in states]
        if owner is not None:
            jobs = [job for job in jobs if job.owner_name == owner]
        if principal is not None:
            if not self.hooks.authorize(principal, Action.READ, None):
                return []
            jobs = [job for job in jobs if self.hooks.authorize(principal, Action.READ, job)]
        return jobs

    def wait(
        self, job_id: str, timeout: float | None = None, principal: Principal | None = None
    ) -> Job:
        """Block until the job has ended or ``timeout`` passed; return its latest record."""
        entry = self._readable(job_id, principal)
        self._wait_entry(entry, timeout)
        return entry.job

    def _wait_entry(self, entry: TrackedJob, timeout: float | None) -> bool:
        return entry.notifier.wait_for(lambda: entry.job.is_finished or None, timeout) is not None

    def watch(self, job_id: str, principal: Principal | None = None) -> JobWatcher:
        """Every new record of the job, from the current one until it has ENDED."""
        return JobWatcher(self._readable(job_id, principal))

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
        entry = self._readable(job_id, principal)
        if principal is not None and not self.hooks.authorize(principal, Action.STOP, entry.job):
            raise PermissionDenied(f"{principal.name!r} may not stop job {job_id}")
        if grace is None:
            grace = self._settings.stop_grace
        if not (math.isfinite(grace) and grace >= 0):
            raise InvalidSpec("grace", f"must be a finite number >= 0, got {grace}")
        self._request_stop(entry, EndReason.STOPPED, grace, force)
        return entry, grace

    def _request_stop(
        self, entry: TrackedJob, reason: EndReason, grace: float, force: bool
    ) -> None:
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
        assert self._scheduler is not None
        with entry.notifier:
            if entry.kill_timer is None and not entry.job.is_finished:
                entry.kill_timer = self._scheduler.call_later(grace, lambda: self._escalate(entry))

    def _escalate(self, entry: TrackedJob) -> None:
        if not entry.job.is_finished and entry.exit_report is None:
            log.info("job %s: still running after its grace period; sending SIGKILL", entry.job.id)
            self._signal(entry, signal.SIGKILL)

    def _signal(self, entry: TrackedJob, signum: int) -> None:
        job = entry.job
        if job.is_finished or job.pid is None:
            return
        try:
            if self.hooks.signal_job(job, signum):
                return
        except Exception:
            log.exception(
                "job %s: signal_job hook failed; falling back to the process group", job.id
            )
        launcher = self._launcher
        if launcher is not None and launcher.alive:
            launcher.signal(job.pid, signum)

    def _time_out(self, entry: TrackedJob) -> None:
        if not entry.job.is_finished:
            log.info("job %s: ran past its time limit; stopping it", entry.job.id)
            self._request_stop(entry, EndReason.TIMED_OUT, self._settings.stop_grace, force=False)

    def stop_all(self, grace: float | None = None) -> builtins.list[Job]:
        """Stop every unfinished job at once and wait for them all (bounded)."""
        if grace is None:
            grace = self._settings.stop_grace
        with self._lock:
            entries = [e for e in self._jobs.values() if not e.job.is_finished]
        for entry in entries:
            self._request_stop(entry, EndReason.STOPPED, grace, force=False)
        deadline = time.monotonic() + self._stop_wait(grace)
        for entry in entries:
            self._wait_entry(entry, max(0.0, deadline - time.monotonic()))
        return [entry.job for entry in entries]


def _kill_orphaned(pidfd: int, pid: int) -> None:
    """Kill a job whose launcher died: its main process through the pidfd, its group while
    the pidfd shows the leader alive (so the group id is still the job's)."""
    with contextlib.suppress(ProcessLookupError, OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(signum: int | None) -> str:
    if signum is None:
        return "?"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


__all__ = ["AsyncEngine", "Engine", "JobWatcher"]
