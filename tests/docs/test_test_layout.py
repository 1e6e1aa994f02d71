"""The test tree itself: areas in folders, and no two test files with the same name (pytest
imports test modules by basename: a second one of the same name fails to collect)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_test_file_names_are_unique_across_the_suite() -> None:
    files = [*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("examples/plugins/*/tests/test_*.py")]
    counts = Counter(p.name for p in files)
    assert [name for name, n in counts.items() if n > 1] == []


def test_no_test_file_lies_loose_at_the_top_of_tests() -> None:
    assert sorted(p.name for p in (ROOT / "tests").glob("test_*.py")) == []
