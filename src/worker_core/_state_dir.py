"""The engine's state directory: made private, and owned by one engine at a time.

The lock is an ``flock`` on ``DIR/lock``, held for the engine's life: the kernel drops it
when the process dies, however it dies, so a crashed server never blocks its successor.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from ._errors import ConfigError


class StateDir:
    """A locked state directory. :meth:`release` unlocks it (the file stays: removing a lock
    file another process may be opening would let two engines in)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> StateDir:
        """Make ``path`` (0700) if missing and lock it; one line of error otherwise."""
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state directory {path}: {_why(exc)}") from exc
        if not path.is_dir():
            raise ConfigError(f"state directory {path}: not a directory")
        try:
            fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"state directory {path}: {_why(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise ConfigError(f"state directory {path} is in use by another worker{who}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if path.stat().st_uid == os.geteuid():
            # Job records and output are private to the server, whatever made the directory.
            path.chmod(0o700)
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _why(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
