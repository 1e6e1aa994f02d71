#!/usr/bin/env python3
"""The ``slurm`` executor against ``sbatch`` alone, on the same real cluster, in one run.

A one-node cluster is made here (tests/slurm/slurm_harness.py: munged, slurmctld, slurmd in
a temporary directory, removed at the end). The worker is a library engine as ``worker
serve`` runs it (sqlite records, spool output, the slurm executor, default intervals). Each
job is ``/bin/date +%s.%N``: it prints the moment it started, on its node's clock (this
machine's), so submit->start is read from the job itself, for both sides alike.

1. submit->start, paired: a worker submit and a plain ``sbatch`` are made at the same
   instant (two threads), N times; each latency is the job's start time minus that instant.
   Pairs land in the same slurmctld scheduling cycle, so the cycle's jitter (up to ~1 s)
   hits both sides alike. Target: worker median <= 1.2 x sbatch median.
2. The submit call alone: ``engine.submit`` returning (record committed, job handed to
   sbatch, Slurm's id kept) against ``sbatch`` returning. Reported.
3. Throughput: rounds of M jobs from 8 threads, ``sbatch`` alone and the worker in turn
   (which goes first alternates): jobs/s accepted (submit calls return), and jobs/s
   started (M / from the first submit to the last job's start); each worker round against
   the sbatch round beside it, the median of those ratios. Target: worker >= sbatch (jobs/s
   accepted). Also this process's CPU per job (sbatch's own, in its process, is the same
   for both and not counted).

Usage: .venv/bin/python bench/bench_slurm.py [--quick] [--memory]   (root; slurm-wlm, munge)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import Row, print_table  # noqa: E402
from slurm_harness import SlurmCluster, find_binary, missing_binaries, running_cluster  # noqa: E402

from worker_core import Config, Engine, JobSpec  # noqa: E402

SCRIPT = b"#!/bin/sh\nexec /bin/date +%s.%N\n"
THREADS = 8


class Sbatch:
    """``sbatch`` alone, as a user would run it: the script on stdin, one output file."""

    def __init__(self, cluster: SlurmCluster, directory: Path) -> None:
        self._cluster = cluster
        self._directory = directory
        self._program = str(find_binary("sbatch"))
        self._count = 0
        self._lock = threading.Lock()

    def submit(self) -> Path:
        with self._lock:
            self._count += 1
            out = self._directory / f"sbatch-{self._count}.out"
        subprocess.run(
            [self._program, "--parsable", f"--output={out}"],
            input=SCRIPT,
            env=self._cluster.env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return out


def started_at(read: Callable[[], bytes], timeout: float = 120.0) -> float:
    """The start time a job printed, once it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read().strip()
        if text:
            return float(text)
        time.sleep(0.005)
    raise TimeoutError("the job did not start in time")


def read_file(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""

    return read


def idle(cluster: SlurmCluster, timeout: float = 120.0) -> None:
    """Wait until the cluster runs and queues nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.run("squeue", "-h", "-o", "%i").strip():
            return
        time.sleep(0.1)
    raise TimeoutError("the cluster stayed busy")


def paired_latency(
    engine: Engine, sbatch: Sbatch, cluster: SlurmCluster, pairs: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    worker_lat: list[float] = []
    sbatch_lat: list[float] = []
    worker_call: list[float] = []
    sbatch_call: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(pairs):
            barrier = threading.Barrier(2)
            shared: dict[str, float] = {}

            def via_worker(
                barrier: threading.Barrier = barrier, shared: dict[str, float] = shared
            ) -> tuple[float, float]:
                barrier.wait()
                t0 = shared.setdefault("t0", time.time())
                job = engine.submit(JobSpec("/bin/date", args=["+%s.%N"]))
                call = time.time() - t0
                start = started_at(lambda: engine.output(job.id))
                engine.wait(job.id, 120)
                return start - t0, call

            def via_sbatch(
                barrier: threading.Barrier = barrier, shared: dict[str, float] = shared
            ) -> tuple[float, float]:
                barrier.wait()
                t0 = shared.setdefault("t0", time.time())
                out = sbatch.submit()
                call = time.time() - t0
                return started_at(read_file(out)) - t0, call

            w, s = pool.submit(via_worker), pool.submit(via_sbatch)
            (wl, wc), (sl, sc) = w.result(), s.result()
            worker_lat.append(wl)
            worker_call.append(wc)
            sbatch_lat.append(sl)
            sbatch_call.append(sc)
            idle(cluster)
    return worker_lat, sbatch_lat, worker_call, sbatch_call


def cpu_seconds() -> float:
    """CPU time of this process (the engine's threads included), not of its children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def throughput(submit: Callable[[], Callable[[], bytes]], jobs: int) -> tuple[float, float, float]:
    """(jobs/s accepted, jobs/s started, this process's CPU ms per job) for ``jobs`` submits
    from :data:`THREADS` threads."""
    first, cpu = time.time(), cpu_seconds()
    with ThreadPoolExecutor(THREADS) as pool:
        readers = list(pool.map(lambda _: submit(), range(jobs)))
    accepted = jobs / (time.time() - first)
    cpu_ms = (cpu_seconds() - cpu) / jobs * 1000
    last_start = max(started_at(read) for read in readers)
    return accepted, jobs / (last_start - first), cpu_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 pairs, 2 rounds of 60 jobs")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="the library's memory stores instead of sqlite and spool (what the executor "
        "itself costs, without durable records)",
    )
    args = parser.parse_args()
    missing = missing_binaries()
    if missing:
        print(f"Slurm is not installed (missing {', '.join(missing)})", file=sys.stderr)
        return 2
    pairs, rounds, jobs = (10, 2, 60) if args.quick else (30, 6, 80)
    with (
        tempfile.TemporaryDirectory(prefix="bench-slurm-") as scratch,
        running_cluster() as cluster,
    ):
        directory = Path(scratch)
        (directory / "sbatch").mkdir()
        slurm = {"slurm_conf": str(cluster.conf)}
        engine_settings: dict[str, object] = {"max_running": 0}
        plugins = ["slurm"]
        if args.memory:
            slurm["output_dir"] = str(directory / "slurm-output")
        else:
            engine_settings["state_dir"] = str(directory / "state")
            plugins = ["sqlite", "spool", "slurm"]
        config = Config.from_mapping({"engine": engine_settings, "plugins": {"slurm": slurm}})
        sbatch = Sbatch(cluster, directory / "sbatch")
        with Engine(plugins, config) as engine:
            # Warm up both paths (first sbatch, first records, the monitor thread).
            paired_latency(engine, sbatch, cluster, 2)
            worker_lat, sbatch_lat, worker_call, sbatch_call = paired_latency(
                engine, sbatch, cluster, pairs
            )

            def via_worker() -> Callable[[], bytes]:
                job = engine.submit(JobSpec("/bin/date", args=["+%s.%N"]))
                return lambda: engine.output(job.id)

            def via_sbatch() -> Callable[[], bytes]:
                return read_file(sbatch.submit())

            # Short rounds, alternating which side goes first: the machine's load (shared,
            # 2 cores) drifts less within a round than across one long run per side.
            results: dict[str, list[tuple[float, float, float]]] = {"worker": [], "sbatch": []}
            sides = [("sbatch", via_sbatch), ("worker", via_worker)]
            for round_ in range(rounds):
                for name, submit in sides if round_ % 2 == 0 else sides[::-1]:
                    results[name].append(throughput(submit, jobs))
                    idle(cluster)
    w_med, s_med = statistics.median(worker_lat), statistics.median(sbatch_lat)
    diffs = [w - s for w, s in zip(worker_lat, sbatch_lat, strict=True)]
    # Rounds are paired (run back to back): the ratio of each pair, then their median.
    pairs_of_rounds = list(zip(results["worker"], results["sbatch"], strict=True))
    acc_ratio = statistics.median(w[0] / s[0] for w, s in pairs_of_rounds)
    start_ratio = statistics.median(w[1] / s[1] for w, s in pairs_of_rounds)
    w_acc = statistics.median(r[0] for r in results["worker"])
    s_acc = statistics.median(r[0] for r in results["sbatch"])
    w_start = statistics.median(r[1] for r in results["worker"])
    s_start = statistics.median(r[1] for r in results["sbatch"])
    w_cpu = statistics.median(r[2] for r in results["worker"])
    s_cpu = statistics.median(r[2] for r in results["sbatch"])
    rows = [
        Row("submit->start, median", "s", w_med, s_med, w_med / s_med, "<= 1.2", w_med <= 1.2 * s_med),
        Row("submit->start, mean", "s", statistics.mean(worker_lat), statistics.mean(sbatch_lat),
            statistics.mean(worker_lat) / statistics.mean(sbatch_lat), "reported", None),
        Row("submit->start, paired diff median", "ms", statistics.median(diffs) * 1000, None, None,
            "reported", None),
        Row("submit call, median", "ms", statistics.median(worker_call) * 1000,
            statistics.median(sbatch_call) * 1000,
            statistics.median(worker_call) / statistics.median(sbatch_call), "reported", None),
        Row(f"jobs/s accepted, {THREADS} threads", "jobs/s", w_acc, s_acc, acc_ratio, ">= 1",
            acc_ratio >= 1),
        Row(f"jobs/s started, {THREADS} threads", "jobs/s", w_start, s_start, start_ratio,
            "reported", None),
        Row("CPU of this process per job", "ms", w_cpu, s_cpu, w_cpu / s_cpu, "reported", None),
    ]  # fmt: skip
    stores = "memory stores" if args.memory else "sqlite and spool"
    print(f"worker with {stores}; {pairs} pairs; {rounds} rounds of {jobs} jobs per side")
    print("(medians; a throughput ratio is the median of each round's to the sbatch one beside it)")
    for name in ("sbatch", "worker"):
        figures = ", ".join(f"{r[0]:.0f}/{r[1]:.1f}" for r in results[name])
        print(f"  {name}: accepted/started jobs/s per round: {figures}")
    print_table(rows)
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
