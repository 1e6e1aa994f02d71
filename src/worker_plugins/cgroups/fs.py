"""Reading and writing cgroup interface files, and bounded polling.

Every kernel-facing error becomes a :class:`~worker_core.WorkerError` that names the
file and the value, because "Invalid argument" alone never tells an operator which limit the
host refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from worker_core.plugin import WorkerError


class CgroupError(WorkerError):
    """A cgroup file operation failed; the message names the path."""


def write(path: Path, value: str) -> None:
    """Write ``value`` to an interface file in one ``write(2)``, as the kernel expects."""
    try:
        # O_CREAT is harmless on cgroupfs (the file exists or the open fails) and lets the v2
        # backend's unit tests run against a plain directory tree.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from exc


def read(path: Path) -> str:
    """The text of an interface file; raises :class:`CgroupError`."""
    try:
        return path.read_text()
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_int(path: Path) -> int | None:
    """An integer file (``memory.peak``, ``cpuacct.usage``), or None if absent or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file (``memory.events``, ``cpu.stat``, ``memory.oom_control``); {} if absent."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def read_pids(path: Path) -> list[int]:
    """The pids in a ``cgroup.procs`` file; [] if the cgroup is gone."""
    # Plain os calls: this is read on every signal and removal, and the text layer of
    # Path.read_text doubles its cost.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return [int(line) for line in b"".join(chunks).split()]
    except (OSError, ValueError):
        return []


def subtree(top: Path, *, bottom_up: bool = False) -> Iterator[Path]:
    """``top`` and every cgroup below it (a job running as root may make sub-cgroups)."""
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=not bottom_up):
        yield Path(dirpath)


def _has_subdirs(top: Path) -> bool:
    # A directory's link count is 2 plus its subdirectories on cgroupfs (kernfs), as on most
    # filesystems; anything else (btrfs says 1) is taken to mean "maybe": walk it.
    try:
        return os.stat(top).st_nlink != 2
    except OSError:
        return True


def tree_pids(top: Path) -> list[int]:
    """The pids in ``top``'s ``cgroup.procs`` and in those of every cgroup below it; [] if
    ``top`` is gone. Without sub-cgroups, the usual case, one stat and one read."""
    if not _has_subdirs(top):
        return read_pids(top / "cgroup.procs")
    return [pid for path in subtree(top) for pid in read_pids(path / "cgroup.procs")]


def ensure_dir(path: Path) -> bool:
    """mkdir -p; True if this call created ``path`` itself."""
    try:
        path.mkdir(parents=True)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise CgroupError(f"cannot create {path}: {exc.strerror or exc}") from exc


#: rmdir errors that mean "not yet" (processes still exiting) rather than "never".
BUSY = frozenset({errno.EBUSY, errno.ENOTEMPTY, errno.EAGAIN})


def rmdir_tree(top: Path) -> None:
    """Remove a cgroup and its sub-cgroups, deepest first; absent is fine. Raises OSError."""
    try:
        top.rmdir()  # the usual case: no sub-cgroup, no process left
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in BUSY or not _has_subdirs(top):
            raise  # processes still leaving, or not busy at all: walking would not help
    for path in subtree(top, bottom_up=True):
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()


def wait_until(predicate: Callable[[], bool], timeout: float, first_sleep: float = 0.001) -> bool:
    """Poll ``predicate``, sleeping longer each time (up to 50 ms), for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    sleep = first_sleep
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(sleep, remaining))
        sleep = min(sleep * 2, 0.05)
