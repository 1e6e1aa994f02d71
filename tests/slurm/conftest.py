"""Fixtures of the slurm tests: a real one-node Slurm cluster for the session (munged,
slurmctld and slurmd started here, stopped by PID at the end; see :mod:`slurm_harness`),
and engines with the ``slurm`` executor in front of it (:mod:`slurm_helpers`).

Skipped, with the reason, only where Slurm's programs are not installed
(``apt-get install -y slurm-wlm munge``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurm_harness import SlurmCluster, start_cluster
from slurm_helpers import EngineFactory, assert_cluster_gone, require_slurm, slurm_config

from worker_core import Engine


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    require_slurm()
    cluster = start_cluster(nodes=1)
    try:
        yield cluster
    finally:
        cluster.stop()
    assert_cluster_gone(cluster)


@pytest.fixture
def slurm_engine(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[EngineFactory]:
    """Makes started engines with the slurm executor (``plugins`` added to ``slurm``);
    every one is closed after the test (its jobs stopped)."""
    made: list[Engine] = []

    def make(*plugins: Any, engine: dict[str, Any] | None = None, **slurm: Any) -> Engine:
        config = slurm_config(slurm_cluster, tmp_path, engine, **slurm)
        started = Engine(["slurm", *plugins], config).start()
        made.append(started)
        return started

    yield make
    for engine in made:
        with contextlib.suppress(Exception):
            engine.close()
