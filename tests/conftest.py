"""Suite-wide guards: no test may leave a job process or a test cgroup behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import job_processes, proc_cmdline


def _leaked_job_processes() -> list[str]:
    """Live processes that carry WORKER_JOB_ID (the engine sets it in every job's environment)."""
    return [f"{pid}: {proc_cmdline(pid)}" for pid in job_processes() if pid != os.getpid()]


def _leaked_test_cgroups() -> list[str]:
    root = Path("/sys/fs/cgroup")
    if not root.exists():
        return []
    return sorted(str(p) for p in root.glob("*/worker-test*")) + sorted(
        str(p) for p in root.glob("worker-test*")
    )


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    before = set(_leaked_job_processes())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [p for p in _leaked_job_processes() if p not in before]
        cgroups = _leaked_test_cgroups()
        if not (leaked or cgroups) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaked, f"job processes left behind by the tests: {leaked}"
    assert not cgroups, f"test cgroups left behind: {cgroups}"
