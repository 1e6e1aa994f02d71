"""Shared helpers of the slurm tests: engine configurations against the test cluster,
jobs that wait for a file the test creates, and the bound on every wait."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from slurm_harness import (
    SlurmCluster,
    leftover_network,
    marked_processes,
    missing_binaries,
    node_cgroups,
)

from worker_core import Config, Engine, JobSpec

#: Short timings: a stop's grace period, and status polled four times a second.
ENGINE = {"stop_grace": 2.0, "kill_timeout": 3.0, "output_linger": 0.5, "max_running": 0}
SLURM = {"poll_interval": 0.25, "output_interval": 0.05, "command_timeout": 20.0}


#: Slurm starts a batch job within a second or two here; every wait is far above that.
WAIT = 60.0


def gate(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A file the test creates to let a job go on, and the shell loop that waits for it
    (bounded: the job gives up after a minute)."""
    path = tmp_path / name
    return path, f"i=0; while [ ! -e {path} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"


def sh(script: str, **spec: Any) -> JobSpec:
    """A job running ``script`` with /bin/sh."""
    return JobSpec("sh", args=["-c", script], **spec)


def require_slurm() -> None:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Slurm is not installed here (missing {', '.join(missing)}): "
            "apt-get install -y slurm-wlm munge"
        )


def assert_cluster_gone(cluster: SlurmCluster) -> None:
    """Nothing of the cluster is left: processes, cgroups, namespaces, directory."""
    assert marked_processes(str(cluster.root)) == []
    assert [p for node in cluster.nodes for p in node_cgroups(node)] == []
    if cluster.network is not None:
        assert leftover_network(cluster.network.tag) == []
    assert not cluster.root.exists()


def slurm_settings(
    cluster: SlurmCluster, root: Path, engine: dict[str, Any] | None = None, **slurm: Any
) -> dict[str, Any]:
    """Configuration (as a mapping) of the slurm executor against ``cluster``, its output
    under ``root``. A ``[plugins.slurm]`` key given as None is left out (its default applies)."""
    section = {
        "slurm_conf": str(cluster.conf),
        "output_dir": str(root / "slurm-output"),
        **SLURM,
        **slurm,
    }
    return {
        "engine": {**ENGINE, **(engine or {})},
        "plugins": {"slurm": {k: v for k, v in section.items() if v is not None}},
    }


def slurm_config(
    cluster: SlurmCluster, root: Path, engine: dict[str, Any] | None = None, **slurm: Any
) -> Config:
    return Config.from_mapping(slurm_settings(cluster, root, engine, **slurm))


EngineFactory = Callable[..., Engine]
