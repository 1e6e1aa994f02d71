"""The distribution's name: not ``worker`` (taken on PyPI by an unrelated package), the one
``worker --version`` reads, and the one the example plugins depend on."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from worker_core._plugins import DISTRIBUTION, installed_plugins

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_distribution_provides_the_worker_program_and_the_built_ins() -> None:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    assert dist.metadata["Name"] == DISTRIBUTION != "worker"
    [script] = dist.entry_points.select(group="console_scripts", name="worker")
    assert script.value == "worker_core.cli:main"
    builtins = {
        name for name, info in installed_plugins().items() if info.distribution == DISTRIBUTION
    }
    assert {"memory", "grpc", "serve", "runas", "rbac", "metrics"} <= builtins


def test_worker_version_reads_the_distribution_metadata() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("worker")), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"worker {importlib.metadata.version(DISTRIBUTION)}\n"


def test_the_example_plugins_depend_on_it() -> None:
    projects = sorted((ROOT / "examples" / "plugins").glob("*/pyproject.toml"))
    assert len(projects) == 3
    for path in projects:
        dependencies = tomllib.loads(path.read_text())["project"]["dependencies"]
        assert DISTRIBUTION in dependencies, path
        assert "worker" not in dependencies, path
