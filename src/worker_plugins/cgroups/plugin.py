"""The ``cgroups`` plugin's hooks: one cgroup per job, created before spawn, removed after exit.

Enable it with ``--plugins cgroups``; configure it in ``[plugins.cgroups]``
(:class:`~worker_plugins.cgroups.config.CgroupsConfig`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import attrs

from worker_core.plugin import (
    Config,
    ConfigError,
    ExitResult,
    InvalidSpec,
    Job,
    JobSpec,
    SpawnPlan,
    WorkerError,
    hookimpl,
)

from .backend import Backend
from .config import CgroupsConfig
from .detect import detect
from .limits import check_ranges, enforced_fields
from .v1 import V1Backend
from .v2 import V2Backend

log = logging.getLogger("worker.cgroups")


def make_backend(config: CgroupsConfig) -> Backend:
    """The backend for this host's layout (or the configured one)."""
    root = Path(config.root)
    host = detect(root)
    if host.choose(config.backend) == "v2":
        assert host.v2_mount is not None  # choose() returns "v2" only with a mount
        return V2Backend(host.v2_mount, config.parent, config.default_pids_max)
    return V1Backend(host.v1_mounts, config.parent, config.default_pids_max)


@attrs.define
class _JobCgroup:
    # Serializes freeze/kill/thaw and removal of one job's cgroup across engine threads.
    lock: threading.Lock = attrs.Factory(threading.Lock)


class CgroupsPlugin:
    """Confines each job to its own cgroup: limits, whole-job signals, OOM and usage facts.

    - ``validate_spec`` refuses limits the host cannot honour, before anything is created.
    - ``pre_spawn`` creates the cgroup with its limits (``pids.max`` always) and adds its
      ``cgroup.procs`` files to the plan; the child joins before exec.
    - ``signal_job`` reaches every process in the cgroup, daemonized ones included.
    - ``post_exit`` reports ``oom_killed``, ``memory_peak`` and ``cpu_seconds``, kills what
      is left and removes the cgroup.
    - ``startup`` removes job cgroups a crashed earlier run left under the parent.

    Thread-safe: the engine calls hooks from several threads.
    """

    config_class = CgroupsConfig

    def __init__(self, config: CgroupsConfig | None = None) -> None:
        self._config = config or CgroupsConfig()
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self._jobs: dict[str, _JobCgroup] = {}
        self._parent_lock: int | None = None

    @property
    def backend(self) -> Backend:
        """The backend in use, chosen on first use from the configuration."""
        with self._lock:
            if self._backend is None:
                self._backend = make_backend(self._config)
            return self._backend

    # ------------------------------------------------------------------ lifecycle

    @hookimpl
    def configure(self, engine: object, config: Config) -> None:
        self._config = config.section("cgroups", CgroupsConfig)
        self._lock_parent()
        try:
            with self._lock:
                self._backend = make_backend(self._config)
            try:
                caps = self.backend.prepare()
            except WorkerError as exc:
                raise ConfigError(
                    f"plugins.cgroups: cannot set up the parent cgroup: {exc}"
                ) from exc
            if "pids" not in caps.controllers:
                # pids.max is what contains a fork bomb; a worker that cannot set it must not run.
                raise ConfigError(
                    f"plugins.cgroups: the {self.backend.version} hierarchy has no pids controller"
                )
            log.info(
                "cgroups %s backend, job cgroups under %s",
                self.backend.version,
                ", ".join(str(p) for p in self.backend.parent_dirs()),
            )
        except BaseException:
            self._unlock_parent()
            raise

    def _lock_parent(self) -> None:
        """Claim the parent for this engine alone.

        Startup cleanup kills everything under the parent, so two engines sharing one would
        kill each other's jobs; the second is refused instead. The lock is an flock, released
        by the kernel if the engine dies, so a crash never leaves it stale.
        """
        directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
        where = f"{Path(self._config.root).resolve()}/{self._config.parent}"
        name = "worker-cgroups-" + hashlib.sha256(where.encode()).hexdigest()[:16] + ".lock"
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"plugins.cgroups: another worker engine on this host uses the cgroup parent "
                f"{self._config.parent!r}; give each engine its own (plugins.cgroups.parent)"
            ) from None
        self._parent_lock = fd

    def _unlock_parent(self) -> None:
        fd, self._parent_lock = self._parent_lock, None
        if fd is not None:
            os.close(fd)

    @hookimpl
    def startup(self, engine: object) -> None:
        self.cleanup_leftovers()

    @hookimpl
    def shutdown(self, engine: object) -> None:
        with self._lock:
            remaining = list(self._jobs)
        for job_id in remaining:
            self._remove(job_id)
        self.backend.remove_parents()
        self._unlock_parent()

    def cleanup_leftovers(self) -> list[str]:
        """Kill and remove job cgroups under the parent that no job of ours owns; their ids."""
        backend = self.backend
        with self._lock:
            ours = set(self._jobs)
        removed = []
        for job_id in backend.leftovers():
            if job_id in ours:
                continue
            count = len(backend.procs(job_id))
            ok = backend.remove(job_id)
            log.warning(
                "job %s: %s leftover cgroup from an earlier run (%d process%s killed)",
                job_id,
                "removed" if ok else "could not remove",
                count,
                "" if count == 1 else "es",
            )
            if ok:
                removed.append(job_id)
        return removed

    # ------------------------------------------------------------------ jobs

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> Iterable[str]:
        limits = spec.limits
        check_ranges(limits, min_memory=self._config.min_memory, cpu_count=os.cpu_count() or 1)
        try:
            caps = self.backend.prepare()
        except WorkerError as exc:
            raise InvalidSpec("limits", f"cgroups are unavailable on this host: {exc}") from exc
        self.backend.check(limits)
        return enforced_fields(caps)

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        entry = _JobCgroup()
        with self._lock:
            if job.id in self._jobs:
                raise WorkerError(f"job {job.id}: already has a cgroup")
            self._jobs[job.id] = entry
        try:
            with entry.lock:
                procs = self.backend.create(job.id, job.spec.limits)
        except BaseException:
            with self._lock:
                self._jobs.pop(job.id, None)
            raise
        plan.cgroup_procs.extend(procs)

    @hookimpl
    def signal_job(self, job: Job, signum: int) -> bool | None:
        with self._lock:
            entry = self._jobs.get(job.id)
        if entry is None:
            return None
        with entry.lock:
            if not self.backend.exists(job.id):
                return None
            self.backend.kill(job.id, signum)
        return True

    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        with self._lock:
            entry = self._jobs.get(job.id)
        if entry is None:
            return
        try:
            with entry.lock:
                stats = self.backend.stats(job.id)
            result.oom_killed = result.oom_killed or stats.oom_killed
            result.facts["oom_killed"] = result.oom_killed
            if stats.memory_peak is not None:
                result.facts["memory_peak"] = stats.memory_peak
            if stats.cpu_seconds is not None:
                result.facts["cpu_seconds"] = stats.cpu_seconds
        except Exception:
            log.exception("job %s: cannot read its cgroup's facts", job.id)
        self._remove(job.id)

    def _remove(self, job_id: str) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            return
        try:
            with entry.lock:
                removed = self.backend.remove(job_id)
        except Exception:
            log.exception("job %s: cannot remove its cgroup", job_id)
            removed = False
        if removed:
            with self._lock:
                self._jobs.pop(job_id, None)
        # If removal failed the entry stays, so shutdown tries again; startup of the next
        # run removes it otherwise.

    def cgroup_dirs(self, job_id: str) -> list[Path]:
        """Where ``job_id``'s cgroups are (for diagnostics and tests)."""
        return self.backend.job_dirs(job_id)
