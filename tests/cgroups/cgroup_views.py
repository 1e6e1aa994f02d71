"""What the pool, hierarchy and removal tests read about an engine's job cgroups.

Everything here reads the host's real cgroup filesystems (v1 on this host) or the plugin's
own account of them, and skips a test where the host has no v1 hierarchies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import wait_until

from worker_core import Config
from worker_core._engine import Engine
from worker_plugins.cgroups.backend import Backend
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.pool import CgroupPool
from worker_plugins.cgroups.v1 import V1Backend

MIB = 1 << 20

#: The thread that removes ended jobs' cgroups and refills the pool.
HOUSEKEEPER = "worker-cgroups-housekeeper"


def config(parent: str, **cgroups: object) -> Config:
    return Config.from_mapping({"plugins": {"cgroups": {"parent": parent, **cgroups}}})


def plugin_of(engine: Engine) -> CgroupsPlugin:
    plugin = engine.plugin_manager.get_plugin("cgroups")
    assert isinstance(plugin, CgroupsPlugin)
    return plugin


def v1_backend(engine: Engine) -> V1Backend:
    backend = plugin_of(engine).backend
    if not isinstance(backend, V1Backend):
        pytest.skip("reads v1 hierarchies; this host uses the v2 backend")
    return backend


def hierarchy_names(backend: V1Backend) -> dict[Path, str]:
    """Each hierarchy's mount point, named by its controllers (``cpu,cpuacct`` co-mounted)."""
    names: dict[Path, list[str]] = {}
    for controller, mount in backend._mounts.items():
        names.setdefault(mount, []).append(controller)
    return {mount: ",".join(sorted(c)) for mount, c in names.items()}


def hierarchies_of(backend: V1Backend, job_id: str) -> set[str]:
    """The hierarchies in which the job's cgroup exists on disk now."""
    return {
        name
        for mount, name in hierarchy_names(backend).items()
        if (mount / backend.parent / job_id).is_dir()
    }


def mounted(backend: V1Backend, *controllers: str) -> set[str]:
    """The names (as :func:`hierarchy_names` gives them) of these controllers' hierarchies;
    skips the test if the host lacks one."""
    missing = [c for c in controllers if c not in backend._mounts]
    if missing:
        pytest.skip(f"this host has no v1 {', '.join(missing)} hierarchy")
    names = hierarchy_names(backend)
    return {names[backend._mounts[c]] for c in controllers}


def ready_pool(engine: Engine) -> CgroupPool:
    """The engine's pool, once full (it fills in the background)."""
    pool = plugin_of(engine).pool
    assert pool is not None, "the engine has no pool"
    assert wait_until(lambda: len(pool.ready()) == pool.size, 10), "the pool never filled"
    return pool


def job_dir_inode(backend: V1Backend, name: str, controller: str = "pids") -> int:
    """The inode of ``name``'s directory in ``controller``'s hierarchy: kernfs keeps it
    across a rename, so it tells a renamed pool entry from a cgroup made anew."""
    return (backend._dir(controller, name)).stat().st_ino


class RemovalGate:
    """Wraps the backend's one-attempt removal: on the housekeeping thread it answers
    "busy" (as the kernel's EBUSY would) while the gate is closed, or for the first
    ``busy_first`` attempts of each job; on any other thread (shutdown) it removes for real.
    Counts the attempts per job."""

    def __init__(self, backend: Backend, *, busy_first: int = 0, closed: bool = False) -> None:
        self.backend = backend
        self.busy_first = busy_first
        self.open = threading.Event()
        if not closed:
            self.open.set()
        self.attempts: dict[str, int] = {}
        self.threads: set[str] = set()
        self._real = backend.try_remove
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> bool:
        thread = threading.current_thread().name
        with self._lock:
            self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
            count = self.attempts[job_id]
            self.threads.add(thread)
        if thread == HOUSEKEEPER and (not self.open.is_set() or count <= self.busy_first):
            return False
        return self._real(job_id)


@contextmanager
def gated_removal(
    backend: Backend, *, busy_first: int = 0, closed: bool = False
) -> Iterator[RemovalGate]:
    """The backend's removal behind a :class:`RemovalGate` for the block; then the real one."""
    gate = RemovalGate(backend, busy_first=busy_first, closed=closed)
    backend.try_remove = gate  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.open.set()
        del backend.try_remove  # the class's method again
