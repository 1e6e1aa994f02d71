"""Stalled followers: what two followers that stop reading cost a job and its live followers.

Starts its own ``worker serve`` on 127.0.0.1 (free port, throwaway certificates). Each round
runs one job writing ``--megabytes`` MiB of zeros, four ways: alone; with two followers that
stop reading (an HTTP/2 stream never read, a TCP connection whose reader stalls); with
``--live`` reading followers; with both. Reports, per way, the job's own time to write its
output and the time until the last live follower had everything (medians over ``--rounds``),
and the ratios the reliability test used to assert before timing left the tests: write time
with stalled followers against alone (was: at most 2x + 250 ms), live followers with stalled
ones beside them against without (was: at most 1.5x + 1 s).

    .venv/bin/python bench/bench_stalled.py [--megabytes 64] [--live 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reliability_harness import (
    MiB,
    StalledRun,
    run_with_stalled_followers,
    worker_serve,
    write_config,
    zeros_digest,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--live", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.megabytes * MiB
    ways = {
        "alone": (False, 0),
        "2 stalled": (True, 0),
        f"{args.live} live": (False, args.live),
        f"{args.live} live + 2 stalled": (True, args.live),
    }
    runs: dict[str, list[StalledRun]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="worker-stalled-") as tmp:
        directory = Path(tmp)
        config = write_config(
            directory / "server.toml",
            "[engine]\nstop_grace = 1.0\n\n[plugins.grpc]\nmax_streams_per_client = 256\n",
        )
        with worker_serve(directory, "--config", str(config)) as server:
            run_with_stalled_followers(server, directory / "warm-up", stalled=False, live=1)
            for index in range(args.rounds):
                for way, (name, (stalled, live)) in enumerate(ways.items()):
                    go = directory / f"go-{index}-{way}"
                    run = run_with_stalled_followers(
                        server, go, stalled=stalled, live=live, size=size
                    )
                    runs[name].append(run)
            status = server.stop()

    expected = (zeros_digest(size), size)
    complete = all(
        run.digests == [expected] * live and not run.failures
        for name, (_, live) in ways.items()
        for run in runs[name]
    )
    write_ms = {name: statistics.median(r.write_ms for r in rs) for name, rs in runs.items()}
    live_s = {name: statistics.median(r.live_s for r in rs) for name, rs in runs.items()}
    print(f"one job writing {args.megabytes} MiB, medians of {args.rounds} rounds")
    print(f"{'':<24} {'job writes (ms)':>16} {'live followers done (s)':>24}")
    for name, (_, live) in ways.items():
        done = f"{live_s[name]:.2f}" if live else "-"
        print(f"{name:<24} {write_ms[name]:>16.0f} {done:>24}")
    alone, stalled = write_ms["alone"], write_ms["2 stalled"]
    live_only, both = live_s[f"{args.live} live"], live_s[f"{args.live} live + 2 stalled"]
    print(f"write with stalled followers / alone: {stalled / max(alone, 1):.2f}")
    print(f"live followers with stalled ones / without: {both / max(live_only, 1e-3):.2f}")
    print(f"every live follower got everything: {complete}; exit status on SIGTERM {status}")
    return 0 if complete and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
