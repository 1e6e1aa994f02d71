"""A gibibyte of output through a real ``worker serve`` with its default settings (the spool
output store under ``--state-dir``): nothing is dropped, however slowly a follower reads.

- A follower that reads slower than its job writes 1 GiB (throttled until the job has ended,
  so it is far behind) receives every byte at its offset, checked by sha256 against the
  deterministic pattern the job wrote; the server's memory does not grow with the output.
- ``worker job submit --wait -- head -c 1G /dev/zero`` through the real CLI delivers exactly
  1,073,741,824 bytes (the issue's report: 630,251,520 and exit 0 with the memory store).

Each test purges its job at the end, so the gibibyte does not stay on the disk.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_harness import WORKER
from reliability_harness import (
    RPC_TIMEOUT,
    MiB,
    Sampler,
    ServerProcess,
    client_env,
    list_all,
    pattern_digest,
    pattern_job,
    stdout_digest,
    submit,
    wait_ended,
    worker_serve,
    zeros_digest,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

GiB = 1 << 30

#: Bound on moving a gibibyte through the server on a loaded 2-core machine.
TRANSFER_TIMEOUT = 900.0

#: While the job writes, the follower takes one message (up to 1 MiB) per this many seconds:
#: at most ~50 MiB/s, slower than the job writes.
THROTTLE_SECONDS = 0.02

#: What the server's resident memory may grow by while a follower is a gibibyte behind: the
#: output is in files, not in the heap (the memory store kept all of it: 1 GiB per GiB).
RSS_GROWTH_BOUND_MIB = 256


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """``worker serve`` with nothing but its defaults and a state directory."""
    with worker_serve(tmp_path, "--state-dir", str(tmp_path / "state")) as server:
        yield server


def _purge(server: ServerProcess, job_id: str) -> None:
    removed = server.stub().Purge(pb.PurgeRequest(job_ids=[job_id]), timeout=RPC_TIMEOUT)
    assert list(removed.job_ids) == [job_id]


@pytest.mark.slow
def test_a_follower_slower_than_a_job_writing_1_gib_gets_every_byte(
    server: ServerProcess, tmp_path: Path
) -> None:
    expected = pattern_digest(GiB)  # before the job: the hashing does not slow the follower
    stub = server.stub()
    go = tmp_path / "go"
    job = submit(
        stub, pattern_job(GiB, f"echo ready >&2; while [ ! -e {go} ]; do sleep 0.01; done")
    )
    call = stub.Tail(pb.TailRequest(job_id=job.id), timeout=TRANSFER_TIMEOUT)
    first = next(call)  # "ready" on stderr: attached before any stdout is written
    assert first.stream == pb.STREAM_STDERR
    ended = threading.Event()
    final: list[pb.Job] = []

    def watch() -> None:
        final.append(wait_ended(server.stub(), job.id, timeout=TRANSFER_TIMEOUT))
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    received_when_ended: list[int] = []
    got = 0

    def slowly(messages: Iterator[pb.OutputChunk]) -> Iterator[pb.OutputChunk]:
        nonlocal got
        for message in messages:
            if not ended.is_set():
                time.sleep(THROTTLE_SECONDS)
            elif not received_when_ended:
                received_when_ended.append(got)
            got += len(message.data) if message.stream == pb.STREAM_STDOUT else 0
            yield message

    before = server.stats()
    sampler = Sampler(server.pid)
    go.touch()
    try:
        digest = stdout_digest(slowly(itertools.chain([first], call)))
    finally:
        peak = sampler.stop()
    watcher.join(TRANSFER_TIMEOUT)
    growth = (peak.rss_kib - before.rss_kib) / 1024
    print(
        f"\nfollower at {received_when_ended[0] / MiB if received_when_ended else got / MiB:.0f}"
        f" MiB of 1024 when the job ended; server RSS {before.rss_mib:.0f} MiB, "
        f"peak {growth:+.0f} MiB"
    )
    assert final and final[0].exit_code == 0 and final[0].end_reason == pb.END_REASON_EXITED
    assert "output_lost_bytes" not in final[0].facts
    assert received_when_ended and received_when_ended[0] < GiB, "the follower was not behind"
    assert digest == (expected, GiB)
    assert growth < RSS_GROWTH_BOUND_MIB, f"server RSS grew by {growth:.0f} MiB"
    _purge(server, job.id)
    assert not (tmp_path / "state" / "output" / job.id).exists()


@pytest.mark.slow
def test_submit_wait_of_head_1g_through_the_cli_delivers_exactly_1_gib(
    server: ServerProcess, tmp_path: Path
) -> None:
    expected = zeros_digest(GiB)
    cli = subprocess.Popen(
        [*WORKER, "job", "submit", "--wait", "--", "head", "-c", "1G", "/dev/zero"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=client_env(server, tmp_path),
    )
    watchdog = threading.Timer(TRANSFER_TIMEOUT, cli.kill)
    watchdog.start()
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(cli.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        digest = hashlib.sha256()
        size = 0
        assert cli.stdout is not None
        while block := cli.stdout.read(MiB):
            digest.update(block)
            size += len(block)
        code = cli.wait(60)
    finally:
        watchdog.cancel()
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    reader.join(30)
    stderr = b"".join(errors).decode(errors="replace")
    assert code == 0, stderr
    assert size == 1_073_741_824, f"{size:,} bytes; stderr: {stderr}"
    assert digest.hexdigest() == expected
    assert "skipped" not in stderr and "Traceback" not in stderr, stderr
    (job,) = list_all(server.stub())
    assert job.exit_code == 0 and int(job.facts["output_bytes"]) == GiB
    _purge(server, job.id)
