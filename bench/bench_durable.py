"""Benchmark: durable state (``sqlite`` records, ``spool`` output files) against the memory
stores, over the wire, in one run.

Two ``worker serve`` processes on 127.0.0.1, both with a state directory: one with serve's
defaults (sqlite + spool), one with ``--plugins no:sqlite,no:spool`` (the memory stores,
their caps raised so a gibibyte is kept). Measurements alternate between the two, so drift
on a shared machine lands on both. The raw baseline is bench_grpc's bare gRPC server.

1. submit→exit of ``/bin/true`` in one call (Submit with ``wait_seconds``), medians:
   durable / memory, target at most 1.15;
2. jobs/s with 16 clients (each its own mTLS connection, one such call per job):
   durable / memory, target at least 0.9;
3. 8 jobs writing 1 GiB each at once, no follower: the durable server's RSS growth (peak
   while they run minus before), target at most 64 MiB;
4. replay of a finished 1 GiB job to one follower vs a raw gRPC stream of as many bytes
   from memory: target at least 0.7 (and, reported, the same replay with the job's file
   dropped from the page cache first);
5. a live follower of a job writing 1 GiB: spool / memory, target at least 1.0 (no slower).

Run as root:

    .venv/bin/python bench/bench_durable.py [--quick]

``--quick``: 128 MiB instead of 1 GiB, fewer runs (about a minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, print_table
from bench_grpc import Bare, bare_rate, replay_rate, submit_and_wait, tail_rate
from grpc_certs import make_pki
from reliability_harness import (
    RPC_TIMEOUT,
    Sampler,
    ServerProcess,
    submit,
    wait_ended,
    worker_serve,
    write_config,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

MiB = 1 << 20

CLIENTS = 16
BIG_JOBS = 8
#: Alternating rounds of the submit→exit calls (each server's calls split among them).
LATENCY_ROUNDS = 10

T = TypeVar("T")


def purge(server: ServerProcess, job_id: str) -> None:
    """Remove a job and its output (a gibibyte on disk or in the server's memory)."""
    server.stub().Purge(pb.PurgeRequest(job_ids=[job_id]), timeout=RPC_TIMEOUT)


def alternating(
    measure: Callable[[ServerProcess], T], servers: dict[str, ServerProcess], rounds: int
) -> dict[str, list[T]]:
    """``measure`` each server in turn, ``rounds`` times; every figure, by server."""
    figures: dict[str, list[T]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, server in servers.items():
            figures[name].append(measure(server))
    return figures


def submit_exit_seconds(server: ServerProcess, runs: int) -> list[float]:
    stub = server.stub("latency")
    submit_and_wait(stub)  # this connection's handshake is not measured
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        submit_and_wait(stub)
        samples.append(time.perf_counter() - start)
    return samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def jobs_per_second(server: ServerProcess, per_client: int) -> tuple[float, float]:
    """Jobs/s with CLIENTS clients, and the server's CPU milliseconds per job (a figure the
    other tenants of a shared host disturb less than the wall clock)."""
    stubs = [server.stub(f"client-{i}") for i in range(CLIENTS)]
    for stub in stubs:
        submit_and_wait(stub)  # connect and warm up
    cpu_before = cpu_seconds(server.pid)

    def work(stub: object) -> None:
        for _ in range(per_client):
            submit_and_wait(stub)

    threads = [threading.Thread(target=work, args=(stub,)) for stub in stubs]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - start
    jobs = CLIENTS * per_client
    return jobs / elapsed, (cpu_seconds(server.pid) - cpu_before) * 1e3 / jobs


def big_jobs_rss(server: ServerProcess, total: int) -> tuple[float, float, list[str]]:
    """Run BIG_JOBS jobs of ``total`` bytes at once, nobody following: the server's RSS
    growth (MiB, peak minus before), the seconds it took and the job ids."""
    stub = server.stub()
    before = server.stats().rss_kib
    sampler = Sampler(server.pid, interval=0.1)
    start = time.perf_counter()
    jobs = [
        submit(stub, pb.JobSpec(command="head", args=["-c", str(total), "/dev/zero"]))
        for _ in range(BIG_JOBS)
    ]
    for job in jobs:
        ended = wait_ended(stub, job.id, timeout=1800)
        if ended.exit_code != 0 or "output_lost_bytes" in ended.facts:
            raise RuntimeError(f"job {job.id} did not keep its output: {ended}")
    elapsed = time.perf_counter() - start
    peak = sampler.stop().rss_kib
    return (peak - before) / 1024, elapsed, [job.id for job in jobs]


def drop_from_page_cache(state: Path, job_id: str) -> None:
    """Evict one job's output files from the page cache (nothing else is touched)."""
    for name in ("stdout", "stderr", "index"):
        path = state / "output" / job_id / name
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB, fewer runs (~1 min)")
    parser.add_argument("--megabytes", type=int, default=None, help="output per big job")
    args = parser.parse_args()
    runs = 60 if args.quick else 200
    rounds = 2 if args.quick else 3
    live_rounds = 3 if args.quick else 5
    per_client = 10 if args.quick else 30
    megabytes = args.megabytes or (128 if args.quick else 1024)
    total = megabytes * MiB

    with tempfile.TemporaryDirectory(prefix="worker-bench-durable-") as tmp:
        directory = Path(tmp)
        pki = make_pki(directory / "pki")
        config = write_config(
            directory / "server.toml",
            "[plugins.grpc]\nmax_streams_per_client = 1000\n\n"
            f"[plugins.memory]\nmax_bytes_per_job = {2 * total}\nmax_total_bytes = {4 * total}\n",
        )
        common = ("--config", str(config))
        durable_state = directory / "durable-state"
        bare = Bare(pki, directory)
        try:
            with (
                worker_serve(
                    directory / "durable", *common, "--state-dir", str(durable_state), pki=pki
                ) as durable,
                worker_serve(
                    directory / "memory",
                    *common,
                    "--plugins",
                    "no:sqlite,no:spool",
                    "--state-dir",
                    str(directory / "memory-state"),
                    pki=pki,
                ) as memory,
            ):
                servers = {"durable": durable, "memory": memory}
                for server in servers.values():
                    submit_exit_seconds(server, 20)  # warm up both before either is measured
                # Many short rounds, every call kept: drift on a shared host lands on both.
                latency = {
                    name: [x for batch in batches for x in batch]
                    for name, batches in alternating(
                        lambda s: submit_exit_seconds(s, runs // LATENCY_ROUNDS),
                        servers,
                        LATENCY_ROUNDS,
                    ).items()
                }
                throughput = alternating(lambda s: jobs_per_second(s, per_client), servers, rounds)

                def live(server: ServerProcess) -> float:
                    rate, job_id = tail_rate(server, 1, total, directory / "go")
                    purge(server, job_id)
                    return rate

                live_rates = alternating(live, servers, live_rounds)
                memory.stop()  # the rest is the durable server's alone

                growth, big_seconds, big_ids = big_jobs_rss(durable, total)
                replays, raws = [], []
                for _ in range(rounds):
                    replays.append(replay_rate(durable, big_ids[0], total))
                    raws.append(bare_rate(bare, 1, total))
                drop_from_page_cache(durable_state, big_ids[1])
                cold = replay_rate(durable, big_ids[1], total)
                for job_id in big_ids:
                    purge(durable, job_id)
        finally:
            bare.close()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    dur_ms, mem_ms = median(latency["durable"]) * 1e3, median(latency["memory"]) * 1e3
    dur_jps = median([rate for rate, _ in throughput["durable"]])
    mem_jps = median([rate for rate, _ in throughput["memory"]])
    dur_cpu = median([cpu for _, cpu in throughput["durable"]])
    mem_cpu = median([cpu for _, cpu in throughput["memory"]])
    replay, raw = median(replays), median(raws)
    spool_live, memory_live = median(live_rates["durable"]), median(live_rates["memory"])
    size = f"{megabytes} MiB"
    rows = [
        Row("submit→exit, Submit(wait_seconds)", "ms", dur_ms, mem_ms, dur_ms / mem_ms,
            "<= 1.15", dur_ms / mem_ms <= 1.15),
        Row(f"jobs/s, {CLIENTS} clients", "jobs/s", dur_jps, mem_jps, dur_jps / mem_jps,
            ">= 0.90", dur_jps / mem_jps >= 0.9),
        Row("  server CPU per job meanwhile", "ms", dur_cpu, mem_cpu, dur_cpu / mem_cpu,
            "", None),
        Row(f"RSS growth, {BIG_JOBS} x {size}, no follower", "MiB", growth, None, None,
            "<= 64 MiB", growth <= 64),
        Row(f"replay of a finished {size} job", "MiB/s", replay, raw, replay / raw,
            ">= 0.70", replay / raw >= 0.7),
        Row("  the same, dropped from the page cache", "MiB/s", cold, raw, cold / raw,
            "", None),
        Row(f"live follower of a {size} job", "MiB/s", spool_live, memory_live,
            spool_live / memory_live, ">= 1.00", spool_live / memory_live >= 1.0),
    ]  # fmt: skip
    print(
        f"durable (sqlite + spool) vs memory stores over mTLS, alternating, medians: "
        f"submit→exit {LATENCY_ROUNDS} rounds of {runs // LATENCY_ROUNDS} calls, jobs/s "
        f"{rounds} rounds, live {live_rounds} rounds, replay {rounds} rounds"
    )
    print_table(rows)
    print(
        f"(baselines: the memory stores, except replay: a raw gRPC stream of {size} from memory."
        f" {BIG_JOBS} x {size} written in {big_seconds:.1f} s,"
        f" {BIG_JOBS * total / MiB / big_seconds:.0f} MiB/s into the spool.)"
    )
    print(
        "rounds: jobs/s durable "
        + ", ".join(f"{x:.0f}" for x, _ in throughput["durable"])
        + " / memory "
        + ", ".join(f"{x:.0f}" for x, _ in throughput["memory"])
    )
    print(
        "rounds: live MiB/s spool "
        + ", ".join(f"{x:.0f}" for x in live_rates["durable"])
        + " / memory "
        + ", ".join(f"{x:.0f}" for x in live_rates["memory"])
    )


if __name__ == "__main__":
    main()
