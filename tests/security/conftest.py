"""Fixtures of the security tests: what a job can do to the host, tried for real.

Jobs run shell scripts, not this interpreter: the venv's python lives under /root, which an
unprivileged job may not enter. Directories given to a job are made under /tmp (pytest's
own temporary directories are under a 0700 one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import cgroup_dirs_named, force_remove_parent, require_root, unique_parent

#: The identity of a job that nothing maps: nobody.
NOBODY = 65534


@pytest.fixture
def parent() -> Iterator[str]:
    """A fresh ``worker-test-<random>`` cgroup parent, removed afterwards (and asserted gone)."""
    require_root()
    name = unique_parent()
    try:
        yield name
    finally:
        force_remove_parent(name)
        assert not cgroup_dirs_named(name), f"could not remove {name}"


@pytest.fixture
def outsider() -> Iterator[int]:
    """The pid of a root ``sleep`` outside every job, which no job may signal."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def given() -> Iterator[Path]:
    """A directory the job is given: owned by nobody, under /tmp."""
    path = Path(tempfile.mkdtemp(prefix="worker-test-given-", dir="/tmp"))
    try:
        os.chown(path, NOBODY, NOBODY)
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def probe_name() -> Iterator[str]:
    """A file name a job tries to create where it must not; removed if it ever was."""
    name = f"worker-test-probe-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        yield name
    finally:
        for directory in ("/", "/etc", "/usr/bin", "/root"):
            Path(directory, name).unlink(missing_ok=True)
