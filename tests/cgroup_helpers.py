"""Plain helpers for tests that make real cgroups (imported explicitly; the cgroups area's
fixtures are in ``tests/cgroups/conftest.py``).

Every real-cgroup test works under its own parent, ``worker-test-<random>``, so it never
touches a real worker's cgroups, and removes it afterwards (killing anything left in it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")

#: Files a kernel puts in a non-root cgroup2 directory with cpu, io, memory and pids enabled.
V2_FILES = (
    "cgroup.controllers",
    "cgroup.subtree_control",
    "cgroup.procs",
    "cgroup.events",
    "cgroup.freeze",
    "cgroup.kill",
    "cpu.max",
    "cpu.weight",
    "cpu.stat",
    "io.max",
    "io.weight",
    "memory.max",
    "memory.high",
    "memory.swap.max",
    "memory.oom.group",
    "memory.events",
    "memory.current",
    "memory.peak",
    "pids.max",
)


def make_v2_tree(
    root: Path, parent: str = "worker", *, omit: Iterable[str] = (), extra: Iterable[str] = ()
) -> Path:
    """A fake cgroup2 root with controllers, and ``parent`` as the kernel would populate it
    (:data:`V2_FILES` but ``omit``, plus ``extra``); for the v2 backend on a hybrid host."""
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    top = root / parent
    top.mkdir()
    for name in (*V2_FILES, *extra):
        if name not in omit:
            (top / name).write_text("")
    (top / "cgroup.controllers").write_text("cpu io memory pids\n")
    return root


def unique_parent() -> str:
    return f"worker-test-{uuid.uuid4().hex[:10]}"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")


def v1_mounts() -> dict[str, Path]:
    """The host's v1 controller mounts; skips the test on a host without v1 controllers."""
    from worker_plugins.cgroups.detect import detect

    require_root()
    host = detect(CGROUP_ROOT)
    if not host.v1_mounts:
        pytest.skip("this host has no cgroup v1 controllers")
    return dict(host.v1_mounts)


def cgroup_dirs_named(parent: str) -> list[Path]:
    """``/sys/fs/cgroup/*/<parent>`` (v1) and ``/sys/fs/cgroup/<parent>`` (v2) that exist."""
    found = [p for p in CGROUP_ROOT.glob(f"*/{parent}") if p.is_dir()]
    if (CGROUP_ROOT / parent).is_dir():
        found.append(CGROUP_ROOT / parent)
    return found


def force_remove_parent(parent: str) -> None:
    """Kill every process under ``parent`` in every hierarchy and remove it, deepest first."""
    for top in cgroup_dirs_named(parent):
        for dirpath, _dirs, _files in os.walk(top):
            state = Path(dirpath) / "freezer.state"
            if state.exists():
                state.write_text("THAWED")
            for line in (Path(dirpath) / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line), signal.SIGKILL)
    for top in cgroup_dirs_named(parent):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            for _ in range(200):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


class Held:
    """A python process started paused, placed into cgroups by the test, then released.

    Tests of a backend have no launcher to join the cgroup before exec, so this test-only
    helper writes the pid into ``cgroup.procs`` while the process waits on its stdin.
    """

    def __init__(self, code: str) -> None:
        wrapper = f"import sys\nsys.stdin.readline()\n{code}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", wrapper],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def join(self, procs_files: Sequence[str]) -> Held:
        for path in procs_files:
            Path(path).write_text(str(self.proc.pid))
        return self

    def release(self) -> Held:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


#: Forks a child that setsid()s and forks a grandchild that prints its pid, detaches its
#: output and sleeps: the classic daemon escaping its process group and session.
DAEMONIZE = """
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode() + b"\\n")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(1000)
    os._exit(0)
os.close(w)
grandchild = os.read(r, 64).decode().strip()
os.wait()
print(grandchild, flush=True)
"""
