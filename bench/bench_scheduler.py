#!/usr/bin/env python3
"""What the scheduler costs: figures for issue 13, as ratios measured in one run.

1. submit->exit of `/bin/true` in-library, one at a time (an immediately admissible job),
   against the engine from before this round's scheduler and job store (``--baseline-rev``,
   run from a git worktree in a fresh interpreter, interleaved with this tree's runs): the
   ratio bounds what the scheduler adds.
   Target: at most 1.1x.
2. A queue of N `/bin/true` jobs submitted at once with ``max_running = C`` drains at no less
   than 0.8 of C threads each submitting and waiting for jobs directly. Target: >= 0.8.
3. Memory per queued job: RSS growth of a fresh process holding N held jobs, per job.
   Target: at most 4 KiB.

Usage: .venv/bin/python bench/bench_scheduler.py [--quick] [--baseline-rev REV]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_ROUND_TRIP = r"""
import json, sys, time
from worker_core import Engine, JobSpec
n = int(sys.argv[1])
try:
    engine = Engine()
except Exception:
    # The baseline tree predates the memory plugin's move; give it its own store object
    # (the installed entry points name this tree's modules).
    from worker_plugins.broker import MemoryBroker
    engine = Engine(["no:memory", MemoryBroker()])
with engine:
    for _ in range(50):
        engine.wait(engine.submit(JobSpec("/bin/true")).id, 10)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        job = engine.submit(JobSpec("/bin/true"))
        engine.wait(job.id, 10)
        times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2] * 1000}))
"""

_DRAIN = r"""
import json, sys, threading, time
from worker_core import Config, Engine, EngineSettings, JobSpec
n, c, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
config = Config(engine=EngineSettings(max_running=c))
with Engine(config=config) as engine:
    for _ in range(20):
        engine.wait(engine.submit(JobSpec("/bin/true")).id, 10)
    t = time.perf_counter()
    if mode == "direct":
        per = n // c
        def worker():
            for _ in range(per):
                engine.wait(engine.submit(JobSpec("/bin/true")).id, 30)
        threads = [threading.Thread(target=worker) for _ in range(c)]
        for th in threads: th.start()
        for th in threads: th.join()
        done = per * c
    else:
        ids = [engine.submit(JobSpec("/bin/true")).id for _ in range(n)]
        for i in ids:
            engine.wait(i, 600)
        done = n
    elapsed = time.perf_counter() - t
print(json.dumps({"jobs_per_s": done / elapsed}))
"""

_QUEUED_MEMORY = r"""
import gc, json, sys
from worker_core import Engine, JobSpec
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
n = int(sys.argv[1])
with Engine() as engine:
    for _ in range(200):  # warm every code path and cache first
        engine.submit(JobSpec("/bin/true", hold=True))
    gc.collect()
    before = rss()
    for _ in range(n):
        engine.submit(JobSpec("/bin/true", args=["x"], hold=True))
    gc.collect()
    after = rss()
    print(json.dumps({"bytes_per_job": (after - before) / n}), flush=True)
    engine.stop_all(grace=0)
"""


def run(code: str, *args: str, src: Path = ROOT / "src") -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def baseline_tree(rev: str) -> tempfile.TemporaryDirectory[str]:
    tmp = tempfile.TemporaryDirectory(prefix="bench-baseline-")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", tmp.name, rev],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--baseline-rev",
        default="9542601",
        help="the engine before this round's scheduler and stores (default: that commit)",
    )
    args = parser.parse_args()
    rounds, n_rt = (2, 200) if args.quick else (3, 500)
    n_drain, conc = (2000, 8) if args.quick else (10_000, 8)
    n_mem = 2000 if args.quick else 10_000

    base = baseline_tree(args.baseline_rev)
    try:
        now, before = [], []
        for _ in range(rounds):  # interleaved: the machine's drift hits both alike
            now.append(run(_ROUND_TRIP, str(n_rt))["median_ms"])
            before.append(run(_ROUND_TRIP, str(n_rt), src=Path(base.name) / "src")["median_ms"])
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", base.name],
            capture_output=True,
            timeout=60,
            check=False,
        )
        base.cleanup()
    rt_now, rt_before = statistics.median(now), statistics.median(before)

    direct = [run(_DRAIN, str(n_drain), str(conc), "direct")["jobs_per_s"] for _ in range(rounds)]
    queued = [run(_DRAIN, str(n_drain), str(conc), "queue")["jobs_per_s"] for _ in range(rounds)]
    per_job = run(_QUEUED_MEMORY, str(n_mem))["bytes_per_job"]

    print(f"submit->exit, in-library: {rt_now:.3f} ms now, {rt_before:.3f} ms before the scheduler")
    print(f"  ratio {rt_now / rt_before:.2f}x  (target <= 1.10)   runs: {now} / {before}")
    print(
        f"drain of {n_drain} queued jobs at max_running={conc}: "
        f"{statistics.median(queued):.0f} jobs/s; {conc} direct submitters: "
        f"{statistics.median(direct):.0f} jobs/s"
    )
    print(
        f"  ratio {statistics.median(queued) / statistics.median(direct):.2f}  (target >= 0.8)"
        f"   runs: {[round(q) for q in queued]} / {[round(d) for d in direct]}"
    )
    print(f"memory per held job: {per_job / 1024:.2f} KiB  (target <= 4 KiB)")


if __name__ == "__main__":
    main()
