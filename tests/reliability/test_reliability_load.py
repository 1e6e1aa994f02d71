"""Load over mTLS against a real ``worker serve``: many short jobs from concurrent clients,
and many followers of one job. Nothing is lost, and the server's fds and threads come back.

The full-size runs (and their figures) are ``bench/bench_load.py``, ``bench/bench_soak.py``
and ``bench/bench_tail.py``; these are scaled to run in well under a minute on two cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from reliability_harness import (
    RPC_TIMEOUT,
    ProcStats,
    ServerProcess,
    percentile,
    run_followers,
    run_load,
    worker_serve,
    write_config,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

JOBS = 1000
CLIENTS = 16
#: Slack for fds and threads after a run. A leak grows with the number of jobs or streams
#: (hundreds here); bounded pools do not: the engine's submit pool (up to 16 threads) and
#: gRPC's event-engine threads grow on demand and were measured to plateau at 32 threads in
#: all, from 25-32 after the warm-up.
FD_SLACK = 4
THREAD_SLACK = 8


def settled(server: ServerProcess, before: ProcStats) -> ProcStats:
    """The server's footprint once its fds and threads are back within the slack of
    ``before``, or after 30 s (a leak never gets there; a busy host only takes longer)."""
    wait_until(
        lambda: (
            (now := server.stats()).fds <= before.fds + FD_SLACK
            and now.threads <= before.threads + THREAD_SLACK
        ),
        timeout=30,
        interval=0.2,
    )
    return server.stats()


def list_all(server: ServerProcess) -> list[pb.Job]:
    """Every job the server lists, page by page."""
    stub = server.stub("admin")
    jobs: list[pb.Job] = []
    request = pb.ListRequest(page_size=1000)
    while True:
        response = stub.List(request, timeout=RPC_TIMEOUT)
        jobs.extend(response.jobs)
        if not response.next_page_token:
            return jobs
        request.page_token = response.next_page_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (not the area's one per test): both tests measure it after
    a warm-up, and its clean stop is checked at the end."""
    directory = tmp_path_factory.mktemp("load")
    config = write_config(
        directory / "server.toml",
        "[engine]\nstop_grace = 1.0\n\n[plugins.grpc]\nmax_streams_per_client = 512\n",
    )
    with worker_serve(directory, "--config", str(config)) as server:
        yield server
        assert server.stop() == 0


def test_a_thousand_short_jobs_from_16_clients_all_complete_with_their_own_output(
    server: ServerProcess,
) -> None:
    # Warm-up at the same concurrency: the server's bounded pools (the engine's submit and
    # finalizer threads, gRPC's) grow to their working size here, not during the measurement.
    warm = run_load(server, CLIENTS, jobs=200, cn_prefix="warm")
    assert not warm.failures
    server.close_channels()
    time.sleep(1.0)
    before = server.stats()

    result = run_load(server, CLIENTS, jobs=JOBS)

    server.close_channels()  # clients gone: what they held on the server must go too
    after = settled(server, before)
    print(
        f"\n{result.completed} jobs by {CLIENTS} clients in {result.elapsed:.1f} s: "
        f"{result.jobs_per_second:.0f} jobs/s, submit→output p50 "
        f"{percentile(result.latencies, 0.5) * 1e3:.1f} ms, p99 "
        f"{percentile(result.latencies, 0.99) * 1e3:.1f} ms; server fds {before.fds} -> "
        f"{after.fds}, threads {before.threads} -> {after.threads}, RSS "
        f"{before.rss_mib:.0f} -> {after.rss_mib:.0f} MiB"
    )
    assert result.failures == []
    assert result.completed == JOBS and len(set(result.job_ids)) == JOBS
    # Every job is known to the server, ended, exit 0, owned by the client that ran it.
    listed = {job.id: job for job in list_all(server)}
    for job_id in result.job_ids:
        job = listed[job_id]
        assert job.state == pb.JOB_STATE_ENDED and job.exit_code == 0, job
        assert job.owner.startswith("load-")
    server.close_channels()
    assert after.fds <= before.fds + FD_SLACK, (before, after)
    assert after.threads <= before.threads + THREAD_SLACK, (before, after)
    # 1,000 finished records and their output are small; no per-job leak of megabytes.
    assert after.rss_kib - before.rss_kib < 64 * 1024


FOLLOWERS = 100
MEGABYTES = 10


def test_a_hundred_followers_of_one_job_get_identical_complete_output(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = server.stats()
    result = run_followers(server, tmp_path / "go", FOLLOWERS, MEGABYTES)
    server.close_channels()
    after = settled(server, before)
    print(
        f"\n{FOLLOWERS} followers x {MEGABYTES} MiB: all done {result.elapsed:.1f} s after the "
        f"first byte, {result.megabytes_per_second:.0f} MiB/s delivered in all; server fds "
        f"{before.fds} -> {after.fds}, threads {before.threads} -> {after.threads}"
    )
    assert result.failures == []
    assert result.digests == [result.expected] * FOLLOWERS
    assert after.fds <= before.fds + FD_SLACK
    assert after.threads <= before.threads + THREAD_SLACK
