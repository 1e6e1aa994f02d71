"""Benchmark: what confinement costs per job.

submit→exit of /bin/true through the engine with no isolation plugin, with ``cgroups``, and
with ``cgroups,netns,pidns``, each as a ratio to the plain engine and to
``subprocess.run(["/bin/true"])`` measured in the same run. Run as root:

    .venv/bin/python bench/bench_isolation.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import median_seconds

from worker_core import Config, Engine, JobSpec


def median_ms(fn: Callable[[], object], runs: int) -> float:
    return median_seconds(fn, runs, warmup=10) * 1e3


def engine_ms(plugins: str, runs: int) -> float:
    parent = f"worker-bench-{uuid.uuid4().hex[:8]}"
    config = Config.from_mapping({"plugins": {"cgroups": {"parent": parent}}})
    spec = JobSpec("/bin/true")
    with Engine(plugins, config) as engine:

        def one() -> None:
            job = engine.submit(spec)
            if not engine.wait(job.id, timeout=10).is_finished:
                raise RuntimeError("job did not end")

        return median_ms(one, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    baseline = median_ms(lambda: subprocess.run(["/bin/true"], check=True), args.runs)
    plain = engine_ms("", args.runs)
    rows = [("subprocess.run", baseline), ("engine", plain)]
    for plugins in ("cgroups", "cgroups,netns,pidns"):
        rows.append((f"engine + {plugins}", engine_ms(plugins, args.runs)))
    print(f"submit→exit of /bin/true, median of {args.runs} runs")
    print(f"{'path':<30} {'ms':>8} {'x engine':>10} {'x subprocess':>14}")
    for name, ms in rows:
        print(f"{name:<30} {ms:8.2f} {ms / plain:10.2f} {ms / baseline:14.2f}")


if __name__ == "__main__":
    main()
