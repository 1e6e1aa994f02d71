"""The cgroup v1 backend: one job cgroup in each controller's hierarchy.

``<mount>/<parent>/<job id>`` in each of memory, cpu, cpuacct, blkio, pids and freezer that
the host mounts (co-mounted controllers such as ``cpu,cpuacct`` share one directory). The
child writes itself into every one of them before exec. Whole-job signals go through the
freezer: freeze, signal every pid, thaw; pause and resume are ``freezer.state`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from worker_core.plugin import Limits

from . import fs
from .backend import Backend, CgroupStats, CgroupUsage
from .detect import V1_CONTROLLERS
from .limits import Capabilities, Write, v1_writes

# limits.py calls the io controller "io" on both versions; v1 mounts it as "blkio".
_V1_NAME = {"io": "blkio"}
_LIMITS_NAME = {"blkio": "io"}


class V1Backend(Backend):
    """Job cgroups on cgroup v1 hierarchies (legacy and hybrid hosts)."""

    version = "v1"

    def __init__(
        self,
        mounts: Mapping[str, Path],
        parent: str,
        default_pids_max: int,
        freeze_timeout: float = 2.0,
    ) -> None:
        super().__init__(parent, default_pids_max, freeze_timeout)
        self._mounts = {c: Path(p) for c, p in mounts.items() if c in V1_CONTROLLERS}

    def _dir(self, controller: str, job_id: str | None = None) -> Path:
        base = self._mounts[_V1_NAME.get(controller, controller)] / self.parent
        return base / job_id if job_id is not None else base

    def _hierarchies(self) -> list[Path]:
        # dict.fromkeys: unique, in a stable order, so co-mounted controllers share one dir.
        return list(dict.fromkeys(self._mounts.values()))

    def parent_dirs(self) -> list[Path]:
        return [mount / self.parent for mount in self._hierarchies()]

    def job_dirs(self, job_id: str) -> list[Path]:
        return [mount / self.parent / job_id for mount in self._hierarchies()]

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
        return v1_writes(limits, self.prepare(), self.default_pids_max)

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
        oom_killed = False
        peak = None
        cpu = None
        if "memory" in self._mounts:
            memory = self._dir("memory", job_id)
            # The oom_kill counter (4.13+) counts kills; failcnt only counts hits on the limit.
            oom_killed = fs.read_keyed(memory / "memory.oom_control").get("oom_kill", 0) > 0
            peak = fs.read_int(memory / "memory.max_usage_in_bytes")
        if "cpuacct" in self._mounts:
            usage_ns = fs.read_int(self._dir("cpuacct", job_id) / "cpuacct.usage")
            cpu = usage_ns / 1e9 if usage_ns is not None else None
        return CgroupStats(oom_killed=oom_killed, memory_peak=peak, cpu_seconds=cpu)

    def usage(self, job_id: str) -> CgroupUsage:
        # Only the hierarchies the host mounts; absent files (a job ending) read as None.
        memory = None
        cpu = None
        if "memory" in self._mounts:
            memory = fs.read_int(self._dir("memory", job_id) / "memory.usage_in_bytes")
        if "cpuacct" in self._mounts:
            usage_ns = fs.read_int(self._dir("cpuacct", job_id) / "cpuacct.usage")
            cpu = usage_ns / 1e9 if usage_ns is not None else None
        return CgroupUsage(cpu_seconds=cpu, memory_current=memory)
