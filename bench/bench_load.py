"""Benchmark: many short jobs over mTLS from K concurrent clients against ``worker serve``.

Starts its own ``worker serve`` on 127.0.0.1 (a free port, throwaway certificates), warms it
up, then runs ``--jobs`` jobs from ``--clients`` threads, each with its own mTLS connection
and Common Name. Every job echoes a unique token, read back with Tail and checked by sha256.
Reports jobs/s, p50/p99 submit→end-of-output latency, and the server's RSS, open fds and
threads before, at peak and after a settle. Run as root from the repository's root:

    .venv/bin/python bench/bench_load.py [--jobs 1000] [--clients 16] [--plugins cgroups]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reliability_harness import (
    Sampler,
    percentile,
    run_load,
    worker_serve,
    write_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--plugins", default="", help="e.g. cgroups (a throwaway parent is used)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before 'after'")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        directory = Path(tmp)
        parent = f"worker-bench-{uuid.uuid4().hex[:8]}"
        config = write_config(
            directory / "server.toml",
            f'[engine]\nstop_grace = 1.0\n\n[plugins.cgroups]\nparent = "{parent}"\n'
            if "cgroups" in args.plugins
            else "[engine]\nstop_grace = 1.0\n",
        )
        flags = ["--config", str(config)] + (["--plugins", args.plugins] if args.plugins else [])
        with worker_serve(directory, *flags) as server:
            warm = run_load(server, args.clients, jobs=max(200, 4 * args.clients), cn_prefix="warm")
            server.close_channels()
            time.sleep(args.settle)
            before = server.stats()
            sampler = Sampler(server.pid)
            result = run_load(server, args.clients, jobs=args.jobs)
            peak = sampler.stop()
            server.close_channels()
            time.sleep(args.settle)
            after = server.stats()
            status = server.stop()

    lat = result.latencies
    print(
        f"worker serve{' --plugins ' + args.plugins if args.plugins else ''}, "
        f"{args.jobs} jobs (/bin/echo <token>) from {args.clients} mTLS clients"
    )
    print(
        f"  completed      {result.completed} / {args.jobs}, failures {len(result.failures)}"
        f" (warm-up {warm.completed}, failures {len(warm.failures)})"
    )
    print(f"  throughput     {result.jobs_per_second:.0f} jobs/s ({result.elapsed:.2f} s)")
    print(
        f"  latency        p50 {percentile(lat, 0.5) * 1e3:.1f} ms, p99 "
        f"{percentile(lat, 0.99) * 1e3:.1f} ms, max {max(lat, default=0) * 1e3:.1f} ms "
        "(submit → end of Tail)"
    )
    print(f"  {'server':<12} {'before':>8} {'peak':>8} {'after':>8}")
    print(f"  {'RSS MiB':<12} {before.rss_mib:8.1f} {peak.rss_mib:8.1f} {after.rss_mib:8.1f}")
    print(f"  {'open fds':<12} {before.fds:8d} {peak.fds:8d} {after.fds:8d}")
    print(f"  {'threads':<12} {before.threads:8d} {peak.threads:8d} {after.threads:8d}")
    print(f"  server exit status on SIGTERM: {status}")
    for failure in result.failures[:5]:
        print(f"  failure: {failure}")
    return 0 if result.completed == args.jobs and not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
