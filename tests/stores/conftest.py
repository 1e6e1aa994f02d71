"""Fixtures of the job-store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker_plugins.sqlite import DATABASE_NAME


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where a test's SQLite job store keeps its file (not made yet)."""
    return tmp_path / DATABASE_NAME
