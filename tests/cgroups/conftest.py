"""Fixtures of the cgroups tests: a private cgroup parent, and an engine confined under it.

Plain helpers (``Held``, ``force_remove_parent``, ...) are in ``tests/cgroup_helpers.py``, which
tests of other areas import too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import cgroup_dirs_named, force_remove_parent, require_root, unique_parent

from worker_core import Config
from worker_core._engine import Engine


@pytest.fixture
def parent() -> Iterator[str]:
    """A fresh ``worker-test-<random>`` parent; afterwards asserts the test left no job cgroup
    under it, then removes it (killing anything left inside)."""
    require_root()
    name = unique_parent()
    try:
        yield name
    finally:
        leftovers = [
            str(Path(d))
            for top in cgroup_dirs_named(name)
            for d, _dirs, _files in os.walk(top)
            if Path(d) != top
        ]
        force_remove_parent(name)
        assert not cgroup_dirs_named(name), f"could not remove {name}"
        assert not leftovers, f"the test left job cgroups behind: {leftovers}"


@pytest.fixture
def engine(parent: str) -> Iterator[Engine]:
    """An engine with the ``cgroups`` plugin under ``parent``, which it must remove on close."""
    config = Config.from_mapping({"plugins": {"cgroups": {"parent": parent}}})
    with Engine(plugins=["cgroups"], config=config) as e:
        yield e
    assert not cgroup_dirs_named(parent), "the parent outlived the engine"
