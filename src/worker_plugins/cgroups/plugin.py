"""The ``cgroups`` plugin's hooks: one cgroup per job, created before spawn, removed after exit.

Enable it with ``--plugins cgroups``; configure it in ``[plugins.cgroups]``
(:class:`~worker_plugins.cgroups.config.CgroupsConfig`).

What a job's start and end wait for is kept small: its cgroup is a ready one from the pool
(:mod:`.pool`), renamed, where the host allows it; its facts are read when it ends, and its
cgroup is removed after its end is reported, by the housekeeping thread
(:mod:`.housekeeper`), which also refills the pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
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

from . import fs
from .backend import REMOVE_TIMEOUT, Backend
from .config import BASE, CgroupsConfig, engine_parent, is_instance_name, run_pid
from .detect import detect
from .housekeeper import Housekeeper
from .limits import check_ranges, enforced_fields
from .names import is_pool_name
from .parent_lock import ParentLock, lock_path
from .pool import CgroupPool
from .v1 import V1Backend
from .v2 import V2Backend

log = logging.getLogger("worker.cgroups")


def make_backend(config: CgroupsConfig, parent: str) -> Backend:
    """The backend for this host's layout (or the configured one), for job cgroups under
    ``parent``."""
    root = Path(config.root)
    host = detect(root)
    if host.choose(config.backend) == "v2":
        assert host.v2_mount is not None  # choose() returns "v2" only with a mount
        return V2Backend(host.v2_mount, parent, config.default_pids_max)
    return V1Backend(
        host.v1_mounts, parent, config.default_pids_max, hierarchies=config.hierarchies
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@attrs.define
class _JobCgroup:
    # Serializes pause/resume, freeze/kill/thaw and removal of one job's cgroup across
    # engine threads.
    lock: threading.Lock = attrs.Factory(threading.Lock)
    # Frozen by freeze_job (a pause), as opposed to the moment's freeze around a signal:
    # a signal must then leave it frozen. Guarded by ``lock``.
    paused: bool = False
    # post_exit has run: the job is over, its cgroup only waits for removal; pause and
    # usage no longer answer for it. Guarded by ``lock``.
    ended: bool = False


class CgroupsPlugin:
    """Confines each job to its own cgroup: limits, whole-job signals, OOM and usage facts.

    - ``validate_spec`` refuses limits the host cannot honour, before anything is created.
    - ``pre_spawn`` creates the cgroup with its limits (``pids.max`` always), renaming a
      ready one from the pool where there is one, and adds its ``cgroup.procs`` files to
      the plan; the child joins before exec.
    - ``signal_job`` reaches every process in the cgroup, daemonized ones included; a paused
      job stays frozen (the signal waits for the resume), except for SIGKILL, which ends it.
    - ``freeze_job`` pauses and resumes the whole cgroup (``cgroup.freeze``, v1 freezer).
    - ``job_usage`` reads the cgroup's CPU time and current memory, for a live job's ``get``.
    - ``post_exit`` reports ``oom_killed``, ``memory_peak`` and ``cpu_seconds`` (from the
      hierarchies the job is in), then hands the cgroup to the housekeeping thread, which
      kills what is left and removes it after the job's end is reported.
    - ``startup`` kills and removes job cgroups (and ready ones) a crashed earlier run left
      under the parent (this engine's own subtree: see :func:`~.config.engine_parent`),
      removes the empty subtrees of engines that are not running (it kills nothing of
      theirs), and starts filling the pool.
    - ``shutdown`` finishes the queued removals (within a bound), removes the pool and
      whatever job cgroup is still there, then the parent.

    Thread-safe: the engine calls hooks from several threads.
    """

    #: It confines this host's processes: refused beside another executor.
    local_only = True

    config_class = CgroupsConfig

    def __init__(self, config: CgroupsConfig | None = None) -> None:
        self._config = config or CgroupsConfig()
        # This engine's own subtree; derived when first needed (configure derives it from
        # the engine's state directory).
        self._parent: str | None = None
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self._jobs: dict[str, _JobCgroup] = {}
        self._parent_lock: ParentLock | None = None
        self._state_dir: Path | None = None
        # Made when first needed, closed by shutdown; guarded by _lock. _closing: shutdown
        # has begun, so removals are done in place and no pool is made any more.
        self._pool: CgroupPool | None = None
        self._housekeeper: Housekeeper | None = None
        self._closing = False

    @property
    def backend(self) -> Backend:
        """The backend in use, chosen on first use from the configuration."""
        with self._lock:
            if self._backend is None:
                self._backend = make_backend(self._config, self.parent)
            return self._backend

    @property
    def pool(self) -> CgroupPool | None:
        """The pool of ready cgroups, once made (None without one: ``pool_size = 0``, v2)."""
        return self._pool

    def pending_removals(self) -> list[str]:
        """Ended jobs whose cgroups the housekeeping thread has still to remove."""
        keeper = self._housekeeper
        return keeper.pending() if keeper is not None else []

    def _ready_pool(self) -> CgroupPool | None:
        """The pool, made on first use; None if there is to be none."""
        backend = self.backend
        if self._config.pool_size == 0 or not backend.can_pool:
            return None
        with self._lock:
            if self._pool is None and not self._closing:
                self._pool = CgroupPool(backend, self._config.pool_size)
            return self._pool

    def _keeper(self) -> Housekeeper | None:
        """The housekeeping thread's handle, made on first use; None once shutting down."""
        with self._lock:
            if self._housekeeper is None and not self._closing:
                self._housekeeper = Housekeeper(
                    self._remove_once, self._refill, lambda: self.backend.remove_timeout
                )
            return self._housekeeper

    def _refill(self) -> None:
        pool = self._pool
        if pool is not None:
            pool.fill()

    @property
    def parent(self) -> str:
        """This engine's own subtree, under which every job cgroup of it is made."""
        if self._parent is None:
            self._parent = engine_parent(self._config, None)
        return self._parent

    # ------------------------------------------------------------------ lifecycle

    @hookimpl
    def configure(self, engine: object, config: Config) -> None:
        self._config = config.section("cgroups", CgroupsConfig)
        self._closing = False
        value = config.engine.state_dir
        self._state_dir = None if value is None else config.resolve_path(value)
        self._parent = engine_parent(self._config, self._state_dir)
        if self._parent == BASE:
            log.warning(
                "plugins.cgroups.parent = %r: the directory of every engine's own subtree; "
                "this engine's start-up clean-up may remove what other engines leave there",
                BASE,
            )
        self._lock_parent()
        try:
            with self._lock:
                self._backend = make_backend(self._config, self._parent)
            try:
                if self._derived:
                    # worker/ is every engine's: made here, never removed, so that one engine
                    # leaving cannot remove it under another one making its subtree in it.
                    for base in dict.fromkeys(p.parent for p in self.backend.parent_dirs()):
                        fs.ensure_dir(base)
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
            self._remove_parents()
            self._unlock_parent()
            raise

    @property
    def _derived(self) -> bool:
        """Whether this engine's subtree is its own under ``worker/`` (not a ``parent`` an
        operator named, which may be theirs, with limits of its own: it is kept)."""
        return self._config.parent is None

    def _remove_parents(self) -> None:
        backend = self._backend
        if backend is None:
            return
        backend.remove_parents()
        if self._derived:
            # Ours even when an earlier run of ours made it (a state directory's subtree
            # after a crash); non-empty only if a job cgroup could not be removed.
            for path in backend.parent_dirs():
                with contextlib.suppress(OSError):
                    path.rmdir()

    def _lock_parent(self) -> None:
        """Claim the parent for this engine alone (see :mod:`.parent_lock`)."""
        path = lock_path(self._config.root, self.parent)
        derived_from_state = (
            self._state_dir is not None
            and self._config.parent is None
            and self._config.instance is None
        )
        hint = (
            f" (derived from the state directory {self._state_dir}: is another engine using it?)"
            if derived_from_state
            else ""
        )
        self._parent_lock = ParentLock.acquire(path, self.parent, hint=hint)

    def _unlock_parent(self) -> None:
        lock, self._parent_lock = self._parent_lock, None
        if lock is not None:
            lock.release()

    @hookimpl
    def startup(self, engine: object) -> None:
        self.cleanup_leftovers()
        self.remove_abandoned_subtrees()
        # After the clean-up, so that it never meets an entry being made.
        if self._ready_pool() is not None and (keeper := self._keeper()) is not None:
            keeper.refill()

    @hookimpl
    def shutdown(self, engine: object) -> None:
        with self._lock:
            self._closing = True
            keeper, self._housekeeper = self._housekeeper, None
            pool, self._pool = self._pool, None
            backend = self._backend
        if keeper is not None:
            # The queued removals first, within a bound; what they leave is removed below.
            keeper.close(backend.remove_timeout if backend is not None else REMOVE_TIMEOUT)
        if pool is not None:
            pool.close()
        with self._lock:
            remaining = list(self._jobs)
        for job_id in remaining:
            self._remove(job_id)
        self._remove_parents()
        self._unlock_parent()

    def cleanup_leftovers(self) -> list[str]:
        """Kill and remove job cgroups under the parent that no job of ours owns; their ids.

        Ready cgroups (pool entries) that are not our pool's, a crashed run's, are removed
        too, quietly: they never held a job.
        """
        backend = self.backend
        with self._lock:
            ours = set(self._jobs)
            pool = self._pool
        stale = [
            name
            for name in backend.pool_leftovers()
            if not (pool is not None and pool.owns(name)) and not self._another_engines(name)
        ]
        cleared = sum(backend.remove(name) for name in stale)
        if cleared:
            log.info(
                "removed %d ready cgroup%s an earlier run left",
                cleared,
                "" if cleared == 1 else "s",
            )
        removed = []
        for job_id in backend.leftovers():
            if job_id in ours:
                continue
            if self._another_engines(job_id):
                log.warning(
                    "%s/%s: another engine's subtree, inside ours; left alone", self.parent, job_id
                )
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

    def _another_engines(self, name: str) -> bool:
        """Whether ``name``, under our parent, is an engine's subtree rather than a job's
        cgroup: named like a derived instance (job ids never are), or locked by a live engine.

        Only a parent that holds other engines' subtrees (``parent = "worker"``) can meet one.
        """
        return is_instance_name(name) or ParentLock.is_held(
            lock_path(self._config.root, f"{self.parent}/{name}")
        )

    def remove_abandoned_subtrees(self) -> list[str]:
        """Remove the empty subtrees under ``worker/`` of engines that are not running; their
        names. Never kills: one with processes in it is only reported, for its owner.

        Not running means: nobody holds its lock (an engine takes it before it makes its
        subtree, and holds it for its life), and for ``run-<pid>-...`` its pid is gone too (in
        case an engine in another PID namespace keeps its locks elsewhere). An empty
        directory is all this removes: an engine with a state directory makes its subtree
        again when it starts, and cleans its own leftovers then.
        """
        if not self._derived:
            return []
        backend = self.backend
        bases = list(dict.fromkeys(path.parent for path in backend.parent_dirs()))
        names: set[str] = set()
        for base in bases:
            with contextlib.suppress(OSError):
                names.update(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
        own = self.parent.rsplit("/", 1)[-1]
        removed = []
        # A ready cgroup (pool-*) there belongs to an engine whose parent is worker/ itself.
        for name in sorted(n for n in names - {own} if not is_pool_name(n)):
            pid = run_pid(name)
            if pid is not None and _alive(pid):
                continue
            subtree = f"{BASE}/{name}"
            try:
                lock = ParentLock.acquire(lock_path(self._config.root, subtree), subtree)
            except ConfigError:
                continue  # held: its engine runs
            try:
                if self._remove_abandoned(subtree, [base / name for base in bases]):
                    removed.append(name)
            finally:
                lock.release()
        return removed

    def _remove_abandoned(self, subtree: str, tops: list[Path]) -> bool:
        pids = {
            pid
            for top in tops
            for path in fs.subtree(top)
            for pid in fs.read_pids(path / "cgroup.procs")
        }
        if pids:
            log.warning(
                "%s: its engine is not running and %d process%s of it still run; not ours "
                "to kill: its engine cleans them when it starts again (plugins.cgroups."
                "instance = %r)",
                subtree,
                len(pids),
                "" if len(pids) == 1 else "es",
                subtree.rsplit("/", 1)[-1],
            )
            return False
        try:
            for top in tops:
                fs.rmdir_tree(top)
        except OSError as exc:
            log.warning("%s: cannot remove it: %s", subtree, exc.strerror or exc)
            return False
        log.info("%s: removed, empty, its engine is not running", subtree)
        return True

    # ------------------------------------------------------------------ jobs

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> Iterable[str]:
        limits = spec.limits
        check_ranges(limits, min_memory=self._config.min_memory, cpu_count=os.cpu_count() or 1)
        try:
            caps = self.backend.capabilities()
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
        pool = self._ready_pool()
        # Taken out of the pool for good: whatever happens next, it is never handed out again.
        pooled = pool.take() if pool is not None else None
        try:
            with entry.lock:
                procs = self.backend.create(job.id, job.spec.limits, pooled=pooled)
        except BaseException:
            with self._lock:
                self._jobs.pop(job.id, None)
            raise
        finally:
            if pool is not None and (keeper := self._keeper()) is not None:
                keeper.refill()
        plan.cgroup_procs.extend(procs)

    def _entry(self, job_id: str) -> _JobCgroup | None:
        with self._lock:
            return self._jobs.get(job_id)

    @hookimpl
    def signal_job(self, job: Job, signum: int) -> bool | None:
        entry = self._entry(job.id)
        if entry is None:
            return None
        with entry.lock:
            if not self.backend.exists(job.id):
                return None
            self.backend.kill(job.id, signum, paused=entry.paused)
            if signum == signal.SIGKILL:
                entry.paused = False  # kill thawed it: the processes must run to die
        return True

    @hookimpl
    def freeze_job(self, job: Job, frozen: bool) -> bool | None:
        entry = self._entry(job.id)
        if entry is None:
            return None
        with entry.lock:
            if entry.ended or not self.backend.exists(job.id):
                return None
            # False: no freezer here, so the engine's SIGSTOP/SIGCONT fallback applies. A
            # freeze that does not complete raises (the job is thawed and keeps running).
            if not self.backend.freeze(job.id, frozen):
                return None
            entry.paused = frozen
        return True

    @hookimpl
    def job_usage(self, job: Job) -> dict[str, int | float] | None:
        # No per-job lock: a pause holds it for up to the freeze timeout, and these are
        # plain reads that tolerate the cgroup vanishing (they read as absent).
        entry = self._entry(job.id)
        if entry is None or entry.ended:
            return None
        return self.backend.usage(job.id).as_dict() or None

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
        with entry.lock:
            entry.ended = True
            if entry.paused:
                # Ended frozen (without a resume): thaw now, so that nothing is left frozen
                # whatever becomes of the removal. Rare, and short.
                with contextlib.suppress(WorkerError):
                    self.backend.freeze(job.id, False)
                entry.paused = False
        # Killing what is left and removing the cgroup wait for the kernel (EBUSY for a
        # moment after the last task exits): not on the way to the job's end.
        keeper = self._keeper()
        if keeper is None or not keeper.remove(job.id):
            self._remove(job.id)

    def _remove_once(self, job_id: str) -> bool:
        """The housekeeping thread's attempt: True when done with ``job_id``, False if busy."""
        entry = self._entry(job_id)
        if entry is None:
            return True
        try:
            with entry.lock:
                removed = self.backend.try_remove(job_id)
        except OSError as exc:
            # Not a moment's EBUSY: the job stays ours, for shutdown to try again.
            log.warning("job %s: cannot remove its cgroup: %s", job_id, exc)
            return True
        if removed:
            with self._lock:
                self._jobs.pop(job_id, None)
        return removed

    def _remove(self, job_id: str) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            return
        try:
            with entry.lock:
                if entry.paused:
                    # Still frozen (ended without a resume): thaw, so that nothing is left
                    # frozen if removal fails. remove's own freeze/kill/thaw does not need it.
                    with contextlib.suppress(WorkerError):
                        self.backend.freeze(job_id, False)
                    entry.paused = False
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
