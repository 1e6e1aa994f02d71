"""Followers: N concurrent Tails of one job streaming M MiB, each checked by sha256.

Starts its own ``worker serve`` on 127.0.0.1 (free port, throwaway certificates), submits a
job that waits until every follower is attached and then writes ``--megabytes`` MiB to stdout,
and follows it with ``--followers`` Tail streams (``--per-connection`` per mTLS connection),
all in this process. Reports how long until every follower had everything, the aggregate
rate, whether every digest matched, and the server's RSS, fds and threads.

    .venv/bin/python bench/bench_tail.py [--followers 500] [--megabytes 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reliability_harness import Sampler, run_followers, worker_serve, write_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=500)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--per-connection", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="worker-tail-") as tmp:
        directory = Path(tmp)
        config = write_config(
            directory / "server.toml",
            "[plugins.grpc]\nmax_streams_per_client = 1000\n\n"
            f"[plugins.memory]\nmax_bytes_per_job = {max(256 << 20, args.megabytes << 21)}\n",
        )
        with worker_serve(directory, "--config", str(config)) as server:
            before = server.stats()
            sampler = Sampler(server.pid, interval=0.5)
            result = run_followers(
                server,
                directory / "go",
                args.followers,
                args.megabytes,
                per_connection=args.per_connection,
                timeout=args.timeout,
            )
            peak = sampler.stop()
            server.close_channels()
            # Long enough for the server's memory housekeeping (every 10 s) to hand back
            # what the followers' buffers held.
            time.sleep(12.0)
            after = server.stats()
            status = server.stop()

    good = sum(1 for d in result.digests if d == result.expected)
    total_mib = args.followers * args.megabytes
    print(
        f"{args.followers} followers x {args.megabytes} MiB "
        f"({args.per_connection} per mTLS connection), one job"
    )
    print(
        f"  identical complete output (sha256): {good} / {args.followers}; "
        f"failures {len(result.failures)}"
    )
    print(
        f"  all done {result.elapsed:.1f} s after the first byte: "
        f"{total_mib / result.elapsed:.0f} MiB/s delivered in all, "
        f"{args.megabytes / result.elapsed:.1f} MiB/s per follower"
    )
    print(
        f"  server RSS {before.rss_mib:.0f} -> peak {peak.rss_mib:.0f} -> {after.rss_mib:.0f} "
        f"MiB; fds {before.fds} -> peak {peak.fds} -> {after.fds}; threads {before.threads} "
        f"-> peak {peak.threads} -> {after.threads}; exit status on SIGTERM {status}"
    )
    for failure in result.failures[:5]:
        print(f"  failure: {failure}")
    return 0 if good == args.followers and not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
