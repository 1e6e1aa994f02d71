"""The cgroup v1 backend: one job cgroup in each controller's hierarchy the job uses.

``<mount>/<parent>/<job id>`` in memory, cpu, cpuacct, blkio, pids and freezer, where the
host mounts them (co-mounted controllers such as ``cpu,cpuacct`` share one directory): all
of them for every job (``hierarchies = "all"``), or only those the job's limits need
(``"needed"``): pids and freezer always, the others with a limit of theirs. Joining a
hierarchy costs the job's start a write, and its cgroup a mkdir and an rmdir, so a job with
no limit joins two, not six. The child writes itself into every one before exec.
Whole-job signals go through the freezer: freeze, signal every pid, thaw; pause and resume
are ``freezer.state`` alone. Pool entries are made in the hierarchies every job uses, and
renamed to the job's id (v1 cgroups can be renamed within their parent).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from worker_core.plugin import Limits

from . import fs, procfs
from .backend import Backend, CgroupStats, CgroupUsage
from .detect import V1_CONTROLLERS
from .limits import Capabilities, Write, v1_writes

# limits.py calls the io controller "io" on both versions; v1 mounts it as "blkio".
_V1_NAME = {"io": "blkio"}
_LIMITS_NAME = {"blkio": "io"}

#: Controllers every job joins where mounted: pids contains a fork bomb, and the freezer
#: makes pause, resume and whole-job signals race-free.
ALWAYS = ("pids", "freezer")

#: Controllers a job joins beside those its limits write to: cpuacct accounts CPU time for a
#: job with a CPU limit, as the cpu hierarchy does not.
ALONGSIDE = {"cpu": ("cpuacct",)}


def needed_controllers(writes: list[Write]) -> set[str]:
    """The v1 controllers a job with these limit writes uses."""
    wanted = set(ALWAYS)
    for write in writes:
        controller = _V1_NAME.get(write.controller, write.controller)
        wanted.add(controller)
        wanted.update(ALONGSIDE.get(controller, ()))
    return wanted


class V1Backend(Backend):
    """Job cgroups on cgroup v1 hierarchies (legacy and hybrid hosts)."""

    version = "v1"
    can_pool = True

    def __init__(
        self,
        mounts: Mapping[str, Path],
        parent: str,
        default_pids_max: int,
        freeze_timeout: float = 2.0,
        *,
        hierarchies: str = "all",
    ) -> None:
        """``hierarchies``: ``"all"`` (every mounted one for every job) or ``"needed"``."""
        super().__init__(parent, default_pids_max, freeze_timeout)
        self._mounts = {c: Path(p) for c, p in mounts.items() if c in V1_CONTROLLERS}
        self.only_needed = hierarchies == "needed"
        # The hierarchies (mount points) of each job this backend made, and its directories
        # there, so that every per-job operation touches those alone. A job it did not make
        # (a crashed run's) is looked for in all of them. Plain dict operations on distinct
        # keys: the GIL makes them atomic, and operations on one job are serialized by the
        # plugin.
        self._job_mounts: dict[str, tuple[Path, ...]] = {}
        self._job_dirs: dict[str, list[Path]] = {}

    def _dir(self, controller: str, job_id: str | None = None) -> Path:
        base = self._mounts[_V1_NAME.get(controller, controller)] / self.parent
        return base / job_id if job_id is not None else base

    def _hierarchies(self) -> list[Path]:
        # dict.fromkeys: unique, in a stable order, so co-mounted controllers share one dir.
        return list(dict.fromkeys(self._mounts.values()))

    def parent_dirs(self) -> list[Path]:
        return [mount / self.parent for mount in self._hierarchies()]

    def job_dirs(self, job_id: str) -> list[Path]:
        dirs = self._job_dirs.get(job_id)
        if dirs is None:
            dirs = [mount / self.parent / job_id for mount in self._hierarchies()]
        return list(dirs)

    def _mounts_of(self, controllers: set[str] | tuple[str, ...]) -> tuple[Path, ...]:
        """The hierarchies of ``controllers`` the host mounts, in the stable order."""
        wanted = {self._mounts[c] for c in controllers if c in self._mounts}
        return tuple(m for m in self._hierarchies() if m in wanted)

    def _assign(self, job_id: str, writes: list[Write]) -> list[Path]:
        if self.only_needed:
            mounts = self._mounts_of(needed_controllers(writes))
        else:
            mounts = tuple(self._hierarchies())
        self._job_mounts[job_id] = mounts
        self._job_dirs[job_id] = [mount / self.parent / job_id for mount in mounts]
        return self.job_dirs(job_id)

    def _forget(self, job_id: str) -> None:
        self._job_dirs.pop(job_id, None)
        self._job_mounts.pop(job_id, None)

    def pool_dirs(self) -> list[Path]:
        mounts = self._mounts_of(ALWAYS) if self.only_needed else self._hierarchies()
        return [mount / self.parent for mount in mounts]

    def _uses(self, job_id: str, controller: str) -> bool:
        """Whether the job's cgroups include ``controller``'s hierarchy."""
        mount = self._mounts.get(controller)
        if mount is None:
            return False
        mounts = self._job_mounts.get(job_id)
        return mounts is None or mount in mounts

    def _setup_parents(self) -> tuple[Capabilities, set[Path]]:
        created: set[Path] = set()
        for mount in self._hierarchies():
            path = mount / self.parent
            # mkdir -p: every new level is ours to remove later, deepest first.
            missing = [p for p in [path, *path.parents] if mount in p.parents and not p.exists()]
            fs.ensure_dir(path)
            created.update(missing)
        files = {}
        for controller in self._mounts:
            parent = self._dir(controller)
            # A non-root cgroup shows the files a job cgroup will have (the root lacks some,
            # e.g. pids.max and freezer.state).
            files[_LIMITS_NAME.get(controller, controller)] = frozenset(
                p.name for p in parent.iterdir() if p.is_file()
            )
        return Capabilities(controllers=frozenset(files), files=files), created

    def writes(self, limits: Limits) -> list[Write]:
        return v1_writes(limits, self.capabilities(), self.default_pids_max)

    def _apply(self, job_id: str, write: Write) -> None:
        fs.write(self._dir(write.controller, job_id) / write.file, write.value)

    def _can_freeze(self) -> bool:
        return "freezer" in self._mounts

    def _write_freezer(self, job_id: str, frozen: bool) -> None:
        fs.write(self._dir("freezer", job_id) / "freezer.state", "FROZEN" if frozen else "THAWED")

    def _freezer_settled(self, job_id: str, frozen: bool) -> bool:
        # FREEZING while some task has not reached the refrigerator yet; reading the file is
        # what makes the kernel re-check, so polling it is the way to wait.
        try:
            state = fs.read(self._dir("freezer", job_id) / "freezer.state").strip()
        except fs.CgroupError:
            return False
        return state == ("FROZEN" if frozen else "THAWED")

    def _kill_all(self, job_id: str) -> bool:
        return False  # v1 has no cgroup.kill

    def stats(self, job_id: str) -> CgroupStats:
        # Only the hierarchies the job uses: without the memory one there was no limit to
        # be OOM-killed at, and no peak to read.
        oom_killed = False
        peak = None
        cpu = None
        if self._uses(job_id, "memory"):
            memory = self._dir("memory", job_id)
            # The oom_kill counter (4.13+) counts kills; failcnt only counts hits on the limit.
            oom_killed = fs.read_keyed(memory / "memory.oom_control").get("oom_kill", 0) > 0
            peak = fs.read_int(memory / "memory.max_usage_in_bytes")
        if self._uses(job_id, "cpuacct"):
            usage_ns = fs.read_int(self._dir("cpuacct", job_id) / "cpuacct.usage")
            cpu = usage_ns / 1e9 if usage_ns is not None else None
        return CgroupStats(oom_killed=oom_killed, memory_peak=peak, cpu_seconds=cpu)

    def usage(self, job_id: str) -> CgroupUsage:
        # The cgroup's figures where the job is in that hierarchy (absent files, a job
        # ending, read as None); otherwise its processes' sums from /proc.
        memory = None
        cpu = None
        has_memory = self._uses(job_id, "memory")
        has_cpu = self._uses(job_id, "cpuacct")
        if has_memory:
            memory = fs.read_int(self._dir("memory", job_id) / "memory.usage_in_bytes")
        if has_cpu:
            usage_ns = fs.read_int(self._dir("cpuacct", job_id) / "cpuacct.usage")
            cpu = usage_ns / 1e9 if usage_ns is not None else None
        if not (has_memory and has_cpu):
            processes = procfs.usage(self.procs(job_id))
            if processes is not None:
                memory = memory if has_memory else processes.rss_bytes
                cpu = cpu if has_cpu else processes.cpu_seconds
        return CgroupUsage(cpu_seconds=cpu, memory_current=memory)
