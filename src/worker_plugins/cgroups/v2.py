"""The cgroup v2 backend: one job cgroup at ``<root>/<parent>/<job id>``.

Controllers are enabled for the job cgroups through ``cgroup.subtree_control`` of every
ancestor from the root down to the parent (which holds no process itself, as the v2
"no internal processes" rule requires). SIGKILL goes through ``cgroup.kill``; other signals,
and SIGKILL on kernels before 5.14, through ``cgroup.freeze``, which pause and resume write
alone.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from worker_core.plugin import Limits

from . import fs
from .backend import Backend, CgroupStats, CgroupUsage
from .limits import Capabilities, Write, v2_writes

#: Controllers enabled for job cgroups, when the host offers them.
WANTED = ("cpu", "io", "memory", "pids")


class V2Backend(Backend):
    """Job cgroups on the unified (cgroup2) hierarchy mounted at ``root``."""

    version = "v2"

    def __init__(
        self, root: Path, parent: str, default_pids_max: int, freeze_timeout: float = 2.0
    ) -> None:
        super().__init__(parent, default_pids_max, freeze_timeout)
        self.root = Path(root)
        self._has_kill = False
        self._has_freeze = False

    def parent_dirs(self) -> list[Path]:
        return [self.root / self.parent]

    def job_dirs(self, job_id: str) -> list[Path]:
        return [self.root / self.parent / job_id]

    def _setup_parents(self) -> tuple[Capabilities, set[Path]]:
        created: set[Path] = set()
        path = self.root
        for part in ["", *self.parent.split("/")]:
            if part:
                path = path / part
                if fs.ensure_dir(path):
                    created.add(path)
            _enable(path)
        parent = self.root / self.parent
        controllers = frozenset(fs.read(parent / "cgroup.controllers").split()) & frozenset(WANTED)
        files: dict[str, set[str]] = defaultdict(set)
        for entry in parent.iterdir():
            files[entry.name.partition(".")[0]].add(entry.name)
        # Every non-root cgroup has the same core files, so the parent tells us about jobs'.
        self._has_kill = "cgroup.kill" in files["cgroup"]  # 5.14+
        self._has_freeze = "cgroup.freeze" in files["cgroup"]  # 5.2+
        caps = Capabilities(
            controllers=controllers, files={k: frozenset(v) for k, v in files.items()}
        )
        return caps, created

    def writes(self, limits: Limits) -> list[Write]:
        return v2_writes(limits, self.capabilities(), self.default_pids_max)

    def _apply(self, job_id: str, write: Write) -> None:
        fs.write(self.job_dirs(job_id)[0] / write.file, write.value)

    def _can_freeze(self) -> bool:
        return self._has_freeze

    def _write_freezer(self, job_id: str, frozen: bool) -> None:
        fs.write(self.job_dirs(job_id)[0] / "cgroup.freeze", "1" if frozen else "0")

    def _freezer_settled(self, job_id: str, frozen: bool) -> bool:
        # cgroup.freeze is asynchronous; cgroup.events says when every task is frozen (or,
        # after a thaw, that none is). Without the file or its key there is nothing to wait for.
        state = fs.read_keyed(self.job_dirs(job_id)[0] / "cgroup.events").get("frozen")
        return state is None or state == int(frozen)

    def _kill_all(self, job_id: str) -> bool:
        if not self._has_kill:
            return False
        # One write: the kernel kills every process of the subtree, new forks included.
        fs.write(self.job_dirs(job_id)[0] / "cgroup.kill", "1")
        return True

    def stats(self, job_id: str) -> CgroupStats:
        job = self.job_dirs(job_id)[0]
        usage_usec = fs.read_keyed(job / "cpu.stat").get("usage_usec")
        return CgroupStats(
            oom_killed=fs.read_keyed(job / "memory.events").get("oom_kill", 0) > 0,
            memory_peak=fs.read_int(job / "memory.peak"),  # 5.19+
            cpu_seconds=usage_usec / 1e6 if usage_usec is not None else None,
        )

    def usage(self, job_id: str) -> CgroupUsage:
        job = self.job_dirs(job_id)[0]
        # cpu.stat's usage_usec is there even without the cpu controller (the core keeps it).
        usage_usec = fs.read_keyed(job / "cpu.stat").get("usage_usec")
        return CgroupUsage(
            cpu_seconds=usage_usec / 1e6 if usage_usec is not None else None,
            memory_current=fs.read_int(job / "memory.current"),
        )


def _enable(path: Path) -> None:
    """Enable the wanted controllers that ``path`` offers for its children."""
    available = set(fs.read(path / "cgroup.controllers").split())
    try:
        enabled = set(fs.read(path / "cgroup.subtree_control").split())
    except fs.CgroupError:
        enabled = set()
    missing = [c for c in WANTED if c in available and c not in enabled]
    if missing:
        # One write, all or nothing, of controllers the kernel just listed as available.
        fs.write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
