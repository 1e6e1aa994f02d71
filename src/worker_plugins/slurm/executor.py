"""The ``slurm`` executor: admitted jobs go to Slurm with sbatch; their status comes back in
batches, their output from the files they write.

One monitor thread does all the watching: every ``output_interval`` it reads what the
followed jobs' files gained (:mod:`.output`), and every ``poll_interval`` it asks squeue
about every active job in one call. A job Slurm has finished with is drained (every byte of
its files handed over) and then reported ended, with Slurm's state mapped by
:mod:`.states`. After a signal it polls faster for a few seconds, so a stop is seen soon.
A job squeue no longer knows is looked up in the accounting database (sacct) when the
cluster has one, and otherwise ended as lost, saying why.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

from worker_core.plugin import (
    Ended,
    ExecutorEvents,
    FailedPrecondition,
    Job,
    Launched,
    LaunchFailed,
    SpawnPlan,
    Stream,
)

from . import mapping, states
from .capabilities import ClusterCapabilities
from .commands import JobStatus, SlurmCommandError, SlurmCommands
from .config import SlurmConfig
from .output import OutputFollower, remove_files

log = logging.getLogger("worker.slurm")

#: Signals that end a job: one Slurm has not started yet is cancelled instead.
_ENDING_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP})
#: After a signal, status is polled this often for this long (a stop is reported soon).
_HURRY_INTERVAL = 0.2
_HURRY_SECONDS = 5.0
#: Polls in a row a job must be missing from squeue before it is looked for elsewhere.
_MISSES_BEFORE_LOST = 2
#: Attempts of the status query when following a job again after a restart.
_RECOVER_ATTEMPTS = 3


@attrs.define
class _SlurmJob:
    job_id: str
    slurm_id: str
    paths: dict[Stream, Path]
    misses: int = 0
    #: How it ended, when that is known before the monitor polls (found by sacct).
    known_end: Ended | None = None


class SlurmExecutor:
    """Runs admitted jobs as Slurm batch jobs (the :class:`~worker_core.plugin.Executor`)."""

    name = "slurm"

    def __init__(
        self,
        config: SlurmConfig,
        output_dir: Path,
        commands: SlurmCommands,
        capabilities: ClusterCapabilities,
    ) -> None:
        self._config = config
        self._output_dir = output_dir
        self._commands = commands
        self.capabilities = capabilities
        self._lock = threading.Lock()
        self._jobs: dict[str, _SlurmJob] = {}
        self._events: ExecutorEvents | None = None
        self._follower: OutputFollower | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._hurry_until = 0.0
        self._status_failing = False

    # ------------------------------------------------------------------ the Executor protocol

    def start(self, events: ExecutorEvents) -> None:
        self._events = events
        self._follower = OutputFollower(
            events, self._config.output_interval, self._config.poll_interval
        )
        self._thread = threading.Thread(target=self._run, name="worker-slurm", daemon=True)
        self._thread.start()

    def launch(self, job: Job, plan: SpawnPlan) -> Launched:
        try:
            mapping.check_plan(plan)
        except ValueError as exc:
            raise LaunchFailed(f"slurm: {exc}") from exc
        options = mapping.sbatch_options(job, plan, self._config, self._output_dir)
        try:
            slurm_id = self._commands.submit(
                options, mapping.batch_script(job, plan), mapping.environment(plan.env)
            )
        except SlurmCommandError as exc:
            raise LaunchFailed(f"slurm: {exc}") from exc
        out, err = mapping.output_paths(self._output_dir, job.id)
        self._follow(_SlurmJob(job.id, slurm_id, {Stream.STDOUT: out, Stream.STDERR: err}), {})
        return Launched(slurm_id)

    def signal(self, job: Job, signum: int) -> None:
        slurm_id = job.external_id
        if slurm_id is None:
            return
        # scancel --signal retries a job Slurm has not started until its own patience ends
        # (longer than any stop's grace): look first.
        try:
            status = self._status_of(slurm_id)
        except SlurmCommandError as exc:
            log.warning("job %s: %s; signalling it anyway", job.id, exc)
            status = None
        if status is not None and (states.is_finished(status) or status.state == "COMPLETING"):
            return  # it ended meanwhile: the next poll reports how
        if status is not None and status.state == "PENDING":
            if signum in _ENDING_SIGNALS:
                # Nothing to signal yet, and ending it is what the signal asks for.
                self._commands.cancel(slurm_id)
                self._hurry()
            else:
                log.warning(
                    "job %s: Slurm job %s has not started; signal %d not delivered",
                    job.id,
                    slurm_id,
                    signum,
                )
            return
        name = signal.Signals(signum).name.removeprefix("SIG")
        try:
            self._commands.signal(slurm_id, name)
        except SlurmCommandError as exc:
            if "Invalid job id" in exc.stderr:
                return  # it ended between the look and the signal
            if signum != signal.SIGKILL:
                raise FailedPrecondition(f"job {job.id}: Slurm job {slurm_id}: {exc}") from exc
            self._commands.cancel(slurm_id)  # Slurm's own TERM, KillWait, KILL
        self._hurry()

    def freeze(self, job: Job, frozen: bool) -> None:
        slurm_id = job.external_id
        if slurm_id is None:
            return
        try:
            if frozen:
                self._commands.suspend(slurm_id)
            else:
                self._commands.resume(slurm_id)
        except SlurmCommandError as exc:
            verb = "suspend" if frozen else "resume"
            try:
                status = self._status_of(slurm_id)
            except SlurmCommandError as query:
                raise FailedPrecondition(
                    f"job {job.id}: Slurm cannot {verb} job {slurm_id}: {exc} ({query})"
                ) from exc
            if not frozen and (status is None or status.state != "SUSPENDED"):
                return  # not suspended (any more): nothing to resume, a stop may go on
            state = status.state if status else "unknown to squeue"
            raise FailedPrecondition(
                f"job {job.id}: Slurm cannot {verb} job {slurm_id} ({state}): {exc}"
            ) from exc

    def recover(self, job: Job, offsets: Mapping[Stream, int]) -> bool:
        slurm_id = job.external_id
        if slurm_id is None:
            return False
        status = None
        for attempt in range(_RECOVER_ATTEMPTS):
            try:
                status = self._commands.status([slurm_id]).get(slurm_id)
                break
            except SlurmCommandError:
                if attempt == _RECOVER_ATTEMPTS - 1:
                    raise
                time.sleep(1.0)
        known_end = None
        if status is None and self.capabilities.accounting:
            status = self._commands.accounting([slurm_id]).get(slurm_id)
            if status is not None and states.is_finished(status):
                known_end = states.ended(status)
        if status is None:
            log.warning(
                "job %s: Slurm no longer knows job %s; it cannot be followed again",
                job.id,
                slurm_id,
            )
            return False
        out, err = mapping.output_paths(self._output_dir, job.id)
        paths = {Stream.STDOUT: out, Stream.STDERR: err}
        for stream, path in paths.items():
            if offsets.get(stream, 0) and not path.exists():
                log.warning("job %s: %s is gone; its output ends where it was", job.id, path)
        self._follow(_SlurmJob(job.id, slurm_id, paths, known_end=known_end), offsets)
        self._hurry()
        return True

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._config.command_timeout + 5.0)
        if self._follower is not None:
            self._follower.close()
        with self._lock:
            left = len(self._jobs)
        if left:
            log.warning("%d Slurm jobs still run; a restart follows them again", left)

    # ------------------------------------------------------------------ watching

    def _follow(self, slurm_job: _SlurmJob, offsets: Mapping[Stream, int]) -> None:
        assert self._follower is not None, "start() was not called"
        with self._lock:
            self._jobs[slurm_job.job_id] = slurm_job
        self._follower.add(slurm_job.job_id, slurm_job.paths, offsets)

    def _hurry(self) -> None:
        self._hurry_until = time.monotonic() + _HURRY_SECONDS
        self._wake.set()

    def _status_of(self, slurm_id: str) -> JobStatus | None:
        """One job's status now; None if Slurm does not know it (SlurmCommandError if
        squeue fails)."""
        return self._commands.status([slurm_id]).get(slurm_id)

    def _run(self) -> None:
        assert self._follower is not None
        next_poll = 0.0
        while not self._stopping.is_set():
            try:
                self._follower.read_due()
                now = time.monotonic()
                if now >= next_poll or self._wake.is_set():
                    self._wake.clear()
                    self._poll()
                    hurry = time.monotonic() < self._hurry_until
                    interval = _HURRY_INTERVAL if hurry else self._config.poll_interval
                    next_poll = time.monotonic() + min(interval, self._config.poll_interval)
            except Exception:
                log.exception("slurm: the monitor failed a round; going on")
            self._wake.wait(
                min(self._config.output_interval, max(0.0, next_poll - time.monotonic()))
            )

    def _poll(self) -> None:
        """One status query for every active job; finish those Slurm is done with."""
        with self._lock:
            jobs = list(self._jobs.values())
        if not jobs:
            return
        for job in jobs:
            if job.known_end is not None:
                self._finish(job, job.known_end)
        asked = [job for job in jobs if job.known_end is None]
        if not asked:
            return
        try:
            found = self._commands.status(job.slurm_id for job in asked)
        except SlurmCommandError as exc:
            if not self._status_failing:
                log.warning("slurm: status unknown, retrying every poll: %s", exc)
                self._status_failing = True
            return
        if self._status_failing:
            log.info("slurm: squeue answers again")
            self._status_failing = False
        missing = []
        for job in asked:
            status = found.get(job.slurm_id)
            if status is None:
                job.misses += 1
                if job.misses >= _MISSES_BEFORE_LOST:
                    missing.append(job)
                continue
            job.misses = 0
            if states.is_finished(status):
                self._finish(job, states.ended(status))
        if missing:
            self._resolve_missing(missing)

    def _resolve_missing(self, jobs: list[_SlurmJob]) -> None:
        found: Mapping[str, JobStatus] = {}
        if self.capabilities.accounting:
            try:
                found = self._commands.accounting(job.slurm_id for job in jobs)
            except SlurmCommandError as exc:
                log.warning("slurm: sacct failed; trying again next poll: %s", exc)
                return
        for job in jobs:
            status = found.get(job.slurm_id)
            if status is not None and states.is_finished(status):
                self._finish(job, states.ended(status))
            elif status is None:
                self._finish(
                    job,
                    Ended(
                        lost=(
                            f"Slurm no longer knows job {job.slurm_id}: it ended longer ago "
                            "than the cluster's MinJobAge without the worker seeing how, or "
                            "slurmctld lost its state"
                        ),
                        facts={"slurm_job_id": job.slurm_id},
                    ),
                )

    def _finish(self, job: _SlurmJob, end: Ended) -> None:
        """Hand over the rest of the job's output, then its end."""
        assert self._follower is not None and self._events is not None
        self._follower.drain(job.job_id)
        with self._lock:
            if self._jobs.get(job.job_id) is not job:
                return
            del self._jobs[job.job_id]
        self._events.ended(job.job_id, end)
        if not self._config.keep_output_files:
            remove_files(job.paths)
