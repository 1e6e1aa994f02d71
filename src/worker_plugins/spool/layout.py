"""Where a job's files live, and making them private.

A job id becomes a path component only after :func:`check_job_id` accepted it: the engine's
ids are 32 lowercase hex digits, and nothing else (``../x``, ``a/b``, an empty string) may
name a directory under the state directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from worker_core.plugin import InvalidSpec

_JOB_ID = re.compile(r"[0-9a-f]{32}")

DIR_MODE = 0o700
FILE_MODE = 0o600


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def check_job_id(value: object) -> str:
    """``value`` if it is a job id; :class:`InvalidSpec` naming it otherwise."""
    if not is_job_id(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidSpec("job_id", f"{shown} is not a job id (32 lowercase hex digits)")
    assert isinstance(value, str)
    return value


def private_directory(path: Path) -> Path:
    """Make ``path`` (one level) a directory only its owner can enter; refuse a symlink.

    An existing directory looser than 0700 is tightened: output is the jobs' data, and a
    directory someone made by hand with the default umask would let everyone read it.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{path}: not a directory (a symlink or a file is refused)")
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def open_job_file(directory: str, name: str) -> int:
    """Open one of a job's files for writing, making it (0600) and the job's directory (0700)
    if missing; an existing file is kept, so a job reopened continues where it ends. Raises
    OSError (a full disk among others)."""
    path = os.path.join(directory, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, FILE_MODE)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)
        fd = os.open(path, flags, FILE_MODE)
    try:
        # The umask may only take bits away from 0600; a file found looser is tightened.
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def open_for_reading(directory: str, name: str) -> int | None:
    """A read-only descriptor of one of a job's files; None if it does not exist."""
    try:
        return os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
