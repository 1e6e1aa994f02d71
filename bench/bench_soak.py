"""Soak: a steady stream of short jobs over mTLS for ``--seconds``, sampling the server.

Starts its own ``worker serve`` on 127.0.0.1 (free port, throwaway certificates) and runs
``--clients`` concurrent mTLS clients submitting jobs (each echoes a unique token, read back
with Tail and checked by sha256) until the time is up. Every ``--interval`` seconds it prints
a row: jobs done in the interval, jobs/s, p50/p99 submit→end-of-output latency of those jobs,
and the server's RSS, open fds and threads. A leak shows as a column that keeps climbing.

    .venv/bin/python bench/bench_soak.py [--seconds 60] [--clients 8] [--interval 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reliability_harness import (
    LoadResult,
    percentile,
    result_lock,
    run_load,
    worker_serve,
    write_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="worker-soak-") as tmp:
        directory = Path(tmp)
        config = write_config(directory / "server.toml", "[engine]\nstop_grace = 1.0\n")
        with worker_serve(directory, "--config", str(config)) as server:
            start = server.stats()
            result = LoadResult()
            runner = threading.Thread(
                target=run_load,
                args=(server, args.clients),
                kwargs={"seconds": args.seconds, "result": result},
                daemon=True,
            )
            began = time.monotonic()
            runner.start()
            print(
                f"soak: {args.clients} mTLS clients for {args.seconds:.0f} s; server at start: "
                f"RSS {start.rss_mib:.1f} MiB, {start.fds} fds, {start.threads} threads"
            )
            print(
                f"{'t (s)':>6} {'jobs':>6} {'jobs/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'RSS MiB':>8} {'fds':>5} {'threads':>7}"
            )
            seen = 0
            last = began
            rows = []
            while runner.is_alive():
                runner.join(args.interval)
                now = time.monotonic()
                with result_lock:
                    fresh = result.latencies[seen:]
                    seen = len(result.latencies)
                stats = server.stats()
                rows.append(stats)
                print(
                    f"{now - began:6.0f} {len(fresh):6d} {len(fresh) / (now - last):7.0f} "
                    f"{percentile(fresh, 0.5) * 1e3:7.1f} {percentile(fresh, 0.99) * 1e3:7.1f} "
                    f"{stats.rss_mib:8.1f} {stats.fds:5d} {stats.threads:7d}",
                    flush=True,
                )
                last = now
            server.close_channels()
            time.sleep(2.0)
            end = server.stats()
            status = server.stop()

    lat = result.latencies
    print(
        f"total: {result.completed} jobs in {result.elapsed:.1f} s = "
        f"{result.jobs_per_second:.0f} jobs/s; p50 {percentile(lat, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(lat, 0.99) * 1e3:.1f} ms; failures {len(result.failures)}"
    )
    print(
        f"server after a 2 s settle: RSS {end.rss_mib:.1f} MiB (peak sampled "
        f"{max(r.rss_mib for r in rows):.1f}), {end.fds} fds, {end.threads} threads; "
        f"exit status on SIGTERM {status}"
    )
    for failure in result.failures[:5]:
        print(f"failure: {failure}")
    return 0 if not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
