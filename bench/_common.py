"""Shared pieces of the benchmarks: timing, RSS, and the result table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import attrs


def median_seconds(fn: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def rss_bytes() -> int:
    """This process's resident set (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@attrs.frozen
class Row:
    """One measurement: the engine's figure, the baseline's, and the target on their ratio."""

    name: str
    unit: str
    engine: float
    baseline: float | None
    ratio: float | None
    target: str
    passed: bool | None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "MISS")


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'benchmark':<44} {'engine':>12} {'baseline':>12} {'ratio':>8} {'target':>12} {'':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        baseline = "" if r.baseline is None else f"{r.baseline:.3f}"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        print(
            f"{r.name + ' (' + r.unit + ')':<44} {r.engine:12.3f} {baseline:>12} {ratio:>8}"
            f" {r.target:>12} {r.verdict:>5}"
        )
