"""Fixtures of the reliability tests: a real ``worker serve`` process, and a cgroup parent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import force_remove_parent, require_root, unique_parent
from reliability_harness import ServerProcess, worker_serve, write_config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh ``worker serve`` for each test (a fault a test causes stays in that test),
    with room for many streams per client."""
    config = write_config(
        tmp_path / "server.toml",
        "[engine]\nstop_grace = 1.0\n\n[plugins.grpc]\nmax_streams_per_client = 256\n",
    )
    with worker_serve(tmp_path, "--config", str(config)) as server:
        yield server


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A fresh ``worker-test-<random>`` cgroup parent, removed afterwards (what is in it is
    killed): a server killed by a test leaves job cgroups behind on purpose."""
    require_root()
    parent = unique_parent()
    try:
        yield parent
    finally:
        force_remove_parent(parent)
