"""The interface both backends implement, and the logic they share.

A backend owns the job cgroups under one parent: it creates them with their limits, signals
every process in them, reads their facts, removes them, and finds the ones a crashed run
left behind. Job cgroups are named by job id and found again from it alone, so nothing
the backend needs is lost if the worker dies. Where the host allows it (v1), it also makes
pool entries: fresh cgroups ready under the parent that ``create`` renames to a job's id
(see :mod:`.names` and :mod:`.pool`).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from worker_core.plugin import Limits

from . import fs
from .limits import Capabilities, Write
from .names import check_job_id, is_pool_name

log = logging.getLogger("worker.cgroups")

#: Seconds to wait for a freeze to take effect before signalling anyway.
FREEZE_TIMEOUT = 2.0
#: Seconds ``remove`` keeps retrying while the kernel finishes tearing processes down.
REMOVE_TIMEOUT = 5.0


@attrs.frozen
class CgroupStats:
    """Facts read from a job's cgroup after it ended; None where the host does not say."""

    oom_killed: bool = False
    memory_peak: int | None = None
    cpu_seconds: float | None = None


@attrs.frozen
class CgroupUsage:
    """What a live job's cgroup uses now; None where the host does not say."""

    cpu_seconds: float | None = None
    memory_current: int | None = None

    def as_dict(self) -> dict[str, int | float]:
        """The figures the host gave, as ``job_usage`` reports them."""
        usage: dict[str, int | float] = {}
        if self.cpu_seconds is not None:
            usage["cpu_seconds"] = self.cpu_seconds
        if self.memory_current is not None:
            usage["memory_current"] = self.memory_current
        return usage


class Backend(abc.ABC):
    """Job cgroups under ``parent`` on one cgroup version.

    Thread-safe for different jobs; callers serialize operations on one job (the plugin
    holds a per-job lock), because a thaw from one caller could otherwise undo another's
    freeze in the middle of its kill.
    """

    version: str

    #: Whether job cgroups can be renamed, so that a pool of ready ones is possible (cgroup
    #: v2 refuses rename(2) with EPERM).
    can_pool: bool = False

    def __init__(
        self, parent: str, default_pids_max: int, freeze_timeout: float = FREEZE_TIMEOUT
    ) -> None:
        self.parent = parent
        self.default_pids_max = default_pids_max
        self.freeze_timeout = freeze_timeout
        self.remove_timeout = REMOVE_TIMEOUT
        self._caps: Capabilities | None = None
        self._parents_removed = False  # by remove_parents, until prepare makes them again
        self._created: set[Path] = set()
        self._lock = threading.Lock()

    # --------------------------------------------------------------------- per version

    @abc.abstractmethod
    def parent_dirs(self) -> list[Path]:
        """The parent cgroup in every hierarchy used."""

    @abc.abstractmethod
    def job_dirs(self, job_id: str) -> list[Path]:
        """The job's cgroup in every hierarchy it uses (whether or not it exists).

        For a job this backend did not create (a crashed run's), every hierarchy: whatever
        hierarchies that run used, its directories are among these.
        """

    def _assign(self, job_id: str, writes: list[Write]) -> list[Path]:
        """Choose the hierarchies of a new job whose limits are ``writes``; its directories."""
        return self.job_dirs(job_id)

    def _forget(self, job_id: str) -> None:  # noqa: B027 - a hook with nothing to do here
        """The job's cgroups are gone: drop what :meth:`_assign` recorded."""

    def pool_dirs(self) -> list[Path]:
        """The parent in each hierarchy a pool entry is made in (every job uses these)."""
        return []

    def _pool_writes(self) -> list[Write]:
        """What a pool entry has written when it is made (the default ``pids.max``)."""
        return [Write("pids", "pids.max", str(self.default_pids_max))]

    @abc.abstractmethod
    def writes(self, limits: Limits) -> list[Write]:
        """The file writes for ``limits``; raises InvalidSpec for what the host cannot honour."""

    @abc.abstractmethod
    def stats(self, job_id: str) -> CgroupStats:
        """OOM kills, peak memory and CPU time of the job's cgroup."""

    @abc.abstractmethod
    def _setup_parents(self) -> tuple[Capabilities, set[Path]]:
        """Create the parents, enable controllers; return what job cgroups get and what was made."""

    @abc.abstractmethod
    def _apply(self, job_id: str, write: Write) -> None:
        """Perform one write in the job's cgroup of ``write.controller``."""

    @abc.abstractmethod
    def usage(self, job_id: str) -> CgroupUsage:
        """CPU time and current memory of the job's cgroup, read now (a few file reads)."""

    @abc.abstractmethod
    def _can_freeze(self) -> bool:
        """Whether job cgroups here have a freezer."""

    @abc.abstractmethod
    def _write_freezer(self, job_id: str, frozen: bool) -> None:
        """Ask the kernel to freeze or thaw the job's cgroup; raises CgroupError."""

    @abc.abstractmethod
    def _freezer_settled(self, job_id: str, frozen: bool) -> bool:
        """Whether the kernel reports the job's cgroup as ``frozen`` (True if it cannot tell)."""

    @abc.abstractmethod
    def _kill_all(self, job_id: str) -> bool:
        """SIGKILL the whole cgroup in one kernel operation; False if the host has none."""

    # --------------------------------------------------------------------- shared

    def prepare(self) -> Capabilities:
        """Make sure the parents exist with controllers enabled; what job cgroups will offer."""
        with self._lock:
            if self._caps is None or not all(p.is_dir() for p in self.parent_dirs()):
                self._caps, created = self._setup_parents()
                self._created |= created
            self._parents_removed = False
            return self._caps

    def capabilities(self) -> Capabilities:
        """What job cgroups offer, as :meth:`prepare` last found; prepares on first use.

        Does not look at the parents again: a job's start pays no stat per hierarchy, and
        a parent removed behind our back is made again when a mkdir meets its absence.
        """
        caps = self._caps
        return caps if caps is not None else self.prepare()

    def check(self, limits: Limits) -> None:
        """Raise InvalidSpec if ``limits`` cannot be honoured here; creates no job cgroup."""
        self.writes(limits)

    def create(self, job_id: str, limits: Limits, *, pooled: str | None = None) -> list[str]:
        """Create the job's cgroups with ``limits`` applied; their ``cgroup.procs`` paths.

        ``pooled``: a pool entry (:meth:`make_pool_entry`) to rename to the job's id where
        it exists, instead of making those directories; it is the job's from then on. If it
        cannot be renamed (gone, say), it is removed and the job's cgroups are made anew.
        """
        check_job_id(job_id)
        writes = self.writes(limits)
        dirs = self._assign(job_id, writes)
        try:
            adopted = self._adopt(pooled, job_id) if pooled is not None else set()
            for path in dirs:
                if path not in adopted:
                    self._mkdir(path)
            done = self._pool_writes() if adopted else []
            for write in writes:
                if write not in done:  # already there since the entry was made
                    self._apply(job_id, write)
        except BaseException:
            # Nothing ran in it yet; a quick removal is enough.
            self.remove(job_id, timeout=1.0)
            raise
        return [str(path / "cgroup.procs") for path in dirs]

    def make_pool_entry(self, name: str) -> None:
        """Make the pool entry ``name`` in every pool hierarchy, its default writes done;
        raises :class:`~.fs.CgroupError` (and leaves nothing) if that fails.

        Only while the parents are set up: after :meth:`remove_parents` (a shutdown that did
        not wait for the housekeeping thread) it fails rather than make them again.
        """
        if self._parents_removed:
            raise fs.CgroupError("the parent cgroups are removed (shutting down)")
        self.capabilities()
        made: list[Path] = []
        try:
            for top in self.pool_dirs():
                # Never the parent again: one gone means the engine is shutting down (its
                # parents removed); a ready cgroup must not bring them back, left for ever.
                self._mkdir(top / name, remake_parent=False)
                made.append(top / name)
            for write in self._pool_writes():
                self._apply(name, write)
        except BaseException:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    def remove_pool_entry(self, name: str) -> bool:
        """Remove an unused pool entry of ours; False (logged) if it could not be."""
        try:
            for top in self.pool_dirs():
                with contextlib.suppress(FileNotFoundError):
                    (top / name).rmdir()
        except OSError:
            # Not the empty, never-used cgroup it should be: the thorough way.
            return self.remove(name, timeout=1.0)
        return True

    def _mkdir(self, path: Path, remake_parent: bool = True) -> None:
        """Make one cgroup under the parent, making the parent again if it vanished (and
        ``remake_parent``)."""
        try:
            try:
                path.mkdir()
            except FileNotFoundError:
                if not remake_parent:
                    raise
                self.prepare()  # someone removed the parent: set it up again, once
                path.mkdir()
        except OSError as exc:
            raise fs.CgroupError(f"cannot create {path}: {exc.strerror or exc}") from exc

    def _adopt(self, name: str, job_id: str) -> set[Path]:
        """Rename pool entry ``name`` to ``job_id`` in every pool hierarchy; the job
        directories it became, or an empty set (and the entry removed) if it could not be."""
        renamed: list[Path] = []
        try:
            for top in self.pool_dirs():
                os.rename(top / name, top / job_id)
                renamed.append(top / job_id)
        except OSError as exc:
            log.warning(
                "pool entry %s: cannot rename it for job %s (%s); making its cgroup anew",
                name,
                job_id,
                exc.strerror or exc,
            )
            # Both halves are empty, never-used cgroups: a plain rmdir removes them.
            undone = {top: top / job_id for top in self.pool_dirs() if top / job_id in renamed}
            for top in self.pool_dirs():
                with contextlib.suppress(OSError):
                    undone.get(top, top / name).rmdir()
            return set()
        return set(renamed)

    def exists(self, job_id: str) -> bool:
        return any(path.is_dir() for path in self.job_dirs(job_id))

    def procs(self, job_id: str) -> list[int]:
        """Every pid in the job's cgroups and any sub-cgroup, across hierarchies."""
        pids: set[int] = set()
        for top in self.job_dirs(job_id):
            pids.update(fs.tree_pids(top))
        return sorted(pids)

    def kill(self, job_id: str, signum: int, *, paused: bool = False) -> None:
        """Deliver ``signum`` to every process of the job, including daemonized descendants.

        SIGKILL uses the kernel's ``cgroup.kill`` where there is one. Otherwise the cgroup is
        frozen first, so nothing can fork or exit (and have its pid reused) between reading
        ``cgroup.procs`` and signalling it, then thawed so the signal is acted on.

        ``paused``: the job was frozen by :meth:`freeze` and must stay frozen; the signal
        stays pending until it is thawed. SIGKILL is the exception: it thaws the job, because
        a task frozen by the v1 freezer does not die until it runs again.
        """
        if not self.procs(job_id):
            # Nothing to signal (or no cgroup), and nothing can join a job's cgroup from
            # outside: skip the freeze and thaw (most calls come after the job's last
            # process has exited).
            return
        if signum == signal.SIGKILL and self._kill_all(job_id):
            if paused:
                # v2 kills frozen tasks, but an empty cgroup left frozen would surprise
                # whoever looks at it next.
                self._set_frozen(job_id, False)
            return
        frozen = paused or self._set_frozen(job_id, True)
        try:
            # Without a freezer a process may fork while we read: go round a few times.
            for _ in range(1 if frozen else 5):
                pids = self.procs(job_id)
                if not pids:
                    break
                _signal_all(pids, signum)
        finally:
            if frozen and (signum == signal.SIGKILL or not paused):
                self._set_frozen(job_id, False)

    def freeze(self, job_id: str, frozen: bool) -> bool:
        """Freeze (pause) or thaw (resume) every process of the job; False without a freezer.

        Waits, at most ``freeze_timeout`` seconds, until the kernel reports the new state. A
        freeze that does not complete in time (a task stuck in uninterruptible sleep) is
        undone and raises :class:`~.fs.CgroupError`: the job is left running, never half
        frozen while reported paused. A thaw cannot fail that way and is not undone.
        """
        if not self._can_freeze():
            return False
        self._write_freezer(job_id, frozen)
        if fs.wait_until(lambda: self._freezer_settled(job_id, frozen), self.freeze_timeout):
            return True
        if frozen:
            with contextlib.suppress(fs.CgroupError):
                self._write_freezer(job_id, False)
            raise fs.CgroupError(
                f"job {job_id}: not frozen after {self.freeze_timeout:g} s (a process in "
                "uninterruptible sleep?); it was thawed and keeps running"
            )
        log.warning("job %s: thaw requested but not yet reported by the kernel", job_id)
        return True

    def _set_frozen(self, job_id: str, frozen: bool) -> bool:
        """Freeze or thaw around a signal; False if the job cannot be frozen.

        A freeze that is slow to complete is not an error here: after the bounded wait the
        signal goes out anyway (most processes are frozen, and the rest get it too).
        """
        if not self._can_freeze():
            return False
        try:
            self._write_freezer(job_id, frozen)
        except fs.CgroupError:
            return False
        fs.wait_until(lambda: self._freezer_settled(job_id, frozen), self.freeze_timeout)
        return True

    def try_remove(self, job_id: str) -> bool:
        """One attempt to kill what is left and remove the job's cgroups: True when they are
        gone, False while the kernel says busy (processes still exiting; try again later).
        Raises OSError for anything else."""
        if self.procs(job_id):
            self.kill(job_id, signal.SIGKILL)
        try:
            for path in self.job_dirs(job_id):
                fs.rmdir_tree(path)
        except OSError as exc:
            if exc.errno in fs.BUSY:
                return False
            raise
        self._forget(job_id)
        return True

    def remove(self, job_id: str, timeout: float | None = None) -> bool:
        """Kill what is left and remove the job's cgroups, retrying for ``timeout`` seconds.

        rmdir only succeeds once the cgroup is empty, and processes leave it when they have
        finished exiting, shortly after SIGKILL. Returns False (and logs) if time ran out.
        This waits; the plugin removes an ended job's cgroups off the job's path, with
        :meth:`try_remove` from its housekeeping thread.
        """
        deadline = time.monotonic() + (self.remove_timeout if timeout is None else timeout)
        sleep = 0.002
        while True:
            try:
                if self.try_remove(job_id):
                    return True
                if time.monotonic() >= deadline:
                    log.warning("job %s: cannot remove its cgroup: still busy", job_id)
                    return False
            except OSError as exc:
                log.warning("job %s: cannot remove its cgroup: %s", job_id, exc)
                return False
            time.sleep(min(sleep, max(0.0, deadline - time.monotonic())))
            sleep = min(sleep * 2, 0.1)

    def _names(self) -> set[str]:
        """Every directory directly under the parent, in any hierarchy."""
        names: set[str] = set()
        for parent in self.parent_dirs():
            try:
                names.update(
                    entry.name
                    for entry in os.scandir(parent)
                    if entry.is_dir(follow_symlinks=False)
                )
            except OSError:
                continue
        return names

    def leftovers(self) -> list[str]:
        """Ids of job cgroups under the parent (after a crash, those of the previous run);
        pool entries are not jobs and are not among them (see :meth:`pool_leftovers`)."""
        return sorted(name for name in self._names() if not is_pool_name(name))

    def pool_leftovers(self) -> list[str]:
        """Names of pool entries under the parent: ours, or a crashed run's."""
        return sorted(name for name in self._names() if is_pool_name(name))

    def remove_parents(self) -> None:
        """Remove the parents this backend created, if empty; an admin's own are kept."""
        with self._lock:
            for path in sorted(self._created, key=lambda p: len(p.parts), reverse=True):
                try:
                    path.rmdir()
                except OSError as exc:
                    log.debug("keeping %s: %s", path, exc.strerror)
                    continue
                self._created.discard(path)
            self._caps = None
            self._parents_removed = True


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        # A pid can vanish between the read and the signal only without a freezer.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
