"""One engine per cgroup parent: an ``flock`` on a lock file, removed when released.

Start-up clean-up kills everything under the parent, so two engines sharing one would kill
each other's jobs; the second is refused instead. An ``flock`` is released by the kernel if
the engine dies, so a crash never leaves a stale lock (only a file, which the next engine
takes over).

Removing the file on release is what needs care. Another engine may have opened the file
just before we removed it: its ``flock`` then succeeds on a file no longer at the path, and
a third engine could create and lock a new file there, so two would hold "the" lock. So a
lock counts only while the file it is held on is still the one at the path (same device and
inode); otherwise the taker retries on the new file. And the holder removes the file while
it still holds the lock, and only if the path still names its own file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from worker_core.plugin import ConfigError

#: Tries when the file keeps being replaced under us (each retry follows another engine's
#: release; more than a few in a row means something else is removing the file).
_ATTEMPTS = 20


def lock_path(root: str, parent: str) -> Path:
    """Where the lock of cgroup parent ``parent`` under ``root`` lives (``/run/lock``)."""
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    digest = hashlib.sha256(f"{Path(root).resolve()}/{parent}".encode()).hexdigest()[:16]
    return directory / f"worker-cgroups-{digest}.lock"


class ParentLock:
    """An exclusive lock on one cgroup parent, held until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, parent: str, *, hint: str = "") -> ParentLock:
        """Lock ``path``; :class:`ConfigError` naming ``parent`` (and ``hint``, why this
        engine has that parent) if another engine holds it."""
        for _ in range(_ATTEMPTS):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"plugins.cgroups: another worker engine on this host uses the cgroup "
                    f"parent {parent!r}{hint}; give each engine its own "
                    "(plugins.cgroups.instance or parent)"
                ) from None
            if _is_at(fd, path):
                return cls(path, fd)
            os.close(fd)  # its holder removed it meanwhile: take the one there now
        raise ConfigError(f"plugins.cgroups: the lock file {path} keeps being replaced")

    @staticmethod
    def is_held(path: Path) -> bool:
        """Whether a live engine holds the lock at ``path`` (a moment's shared lock tells)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False  # no file: nobody took it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # unlocks
        return False

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and unlock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _is_at(fd, self.path):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            os.close(fd)  # unlocks


def _is_at(fd: int, path: Path) -> bool:
    """True if ``path`` names the file open as ``fd``."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)
