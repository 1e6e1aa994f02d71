"""A full disk under ``worker serve --state-dir DIR``: the state directory on a 16 MiB tmpfs
(mounted by the test, always unmounted), filled by a job's own output.

What must hold: the job writing more than fits runs to its end and exits 0; its record
says how many bytes were lost (``output_lost_bytes``), the bytes kept are the right ones at
the right offsets and the loss is a gap in them; the server does not crash, hang or
corrupt its database; a Submit meanwhile either succeeds or is refused with a clear
RESOURCE_EXHAUSTED; once space is freed, everything works again, across a restart too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import attrs
import grpc
import pytest
from grpc_certs import TestPKI, make_pki
from grpc_harness import collect, shell, wait_for
from reliability_harness import (
    RPC_TIMEOUT,
    MiB,
    ServerProcess,
    integrity_check,
    list_all,
    pattern_bytes,
    pattern_job,
    submit,
    tmpfs,
    wait_ended,
    worker_serve,
    write_config,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

#: The disk, and what the job writes: far more than fits.
DISK = "16m"
WRITTEN = 40 * MiB
#: A file of another program on the same disk, removed to free space.
FILLER = 4 * MiB

#: Housekeeping retries records the store could not commit every 30 s: a bound above it.
RETRY_BOUND = 75.0


@attrs.define
class FullDisk:
    server: ServerProcess
    disk: Path
    state: Path
    filler: Path
    job: pb.Job  # the job that filled it, as Watch last reported it


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path / "pki")


def _serve(tmp_path: Path, pki: TestPKI, state: Path) -> AbstractContextManager[ServerProcess]:
    config = write_config(tmp_path / "server.toml", "[engine]\nstop_grace = 1.0\n")
    return worker_serve(
        tmp_path / "runs", "--state-dir", str(state), "--config", str(config), pki=pki
    )


@pytest.fixture
def full_disk(tmp_path: Path, pki: TestPKI) -> Iterator[FullDisk]:
    """A server whose state directory's disk a job's output has just filled."""
    with tmpfs(tmp_path / "disk", DISK) as disk:
        state = disk / "state"
        with _serve(tmp_path, pki, state) as server:
            stub = server.stub()
            for _ in range(3):  # the database, its WAL, a few records
                wait_ended(stub, submit(stub, shell("echo warm-up")).id)
            filler = disk / "someone-elses-file"
            filler.write_bytes(b"\0" * FILLER)
            go = tmp_path / "go"
            job = submit(stub, pattern_job(WRITTEN, f"while [ ! -e {go} ]; do sleep 0.01; done"))
            go.touch()
            ended = wait_ended(stub, job.id, timeout=120)
            free = subprocess.run(
                ["df", "--output=avail", "-B1", str(disk)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
            assert int(free) < MiB, f"the disk is not full ({free} bytes free)"
            yield FullDisk(server, disk, state, filler, ended)
            # Still running, or stopped by the test with SIGTERM (exit 0): never crashed.
            assert server.process.poll() in (None, 0), f"the server died:\n{server.stderr}"


def _kept(stub: object, job_id: str) -> tuple[int, list[tuple[int, int]]]:
    """Bytes of stdout kept (checked against the pattern) and the gaps between them."""
    messages = stub.Tail(  # type: ignore[attr-defined]
        pb.TailRequest(job_id=job_id, stream=pb.STREAM_STDOUT), timeout=RPC_TIMEOUT
    )
    at, kept, gaps = 0, 0, []
    for message in messages:
        if message.offset > at:
            gaps.append((at, message.offset - at))
        assert message.offset >= at, "an overlap in stdout"
        assert message.data == pattern_bytes(message.offset, len(message.data)), (
            f"wrong bytes at offset {message.offset}"
        )
        kept += len(message.data)
        at = message.offset + len(message.data)
    if at < WRITTEN:
        gaps.append((at, WRITTEN - at))
    return kept, gaps


def test_a_job_filling_the_disk_runs_to_its_end_and_its_record_counts_the_lost_bytes(
    full_disk: FullDisk,
) -> None:
    job = full_disk.job
    assert job.end_reason == pb.END_REASON_EXITED and job.exit_code == 0, job
    lost = int(job.facts["output_lost_bytes"])
    assert int(job.facts["output_bytes"]) == WRITTEN
    assert WRITTEN - 16 * MiB <= lost < WRITTEN
    kept, gaps = _kept(full_disk.server.stub(), job.id)
    assert kept + lost == WRITTEN, (kept, lost)
    assert sum(length for _, length in gaps) == lost and gaps
    assert any(job.id in line and "lost" in line for line in full_disk.server.stderr_lines), (
        full_disk.server.stderr
    )


def test_while_the_disk_is_full_a_submit_succeeds_or_is_refused_clearly_and_after_freeing_works(
    full_disk: FullDisk, tmp_path: Path, pki: TestPKI
) -> None:
    stub = full_disk.server.stub()
    answers = []
    for _ in range(5):
        try:
            job = stub.Submit(
                pb.SubmitRequest(spec=shell("echo while-full"), wait_seconds=20), timeout=60
            ).job
            answers.append(("ok", job.id))
            assert job.state == pb.JOB_STATE_ENDED and job.exit_code == 0, job
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
            assert "full" in exc.details(), exc.details()
            answers.append(("refused", exc.details()))
    print(f"\nsubmits on a full disk: {answers}")
    assert full_disk.server.process.poll() is None

    full_disk.filler.unlink()  # space comes back
    job = stub.Submit(pb.SubmitRequest(spec=shell("echo after"), wait_seconds=20), timeout=60).job
    assert job.state == pb.JOB_STATE_ENDED and job.exit_code == 0, job
    assert collect(stub.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT)) == {
        pb.STREAM_STDOUT: b"after\n"
    }
    # The record of the job that filled the disk reaches the store once it can commit.
    filler_job = full_disk.job.id
    wait_for(
        lambda: (
            stub.Get(pb.GetRequest(job_id=filler_job), timeout=RPC_TIMEOUT).job.state
            == pb.JOB_STATE_ENDED
        ),
        timeout=RETRY_BOUND,
        what="the full disk's job to read as ended",
    )
    removed = stub.Purge(pb.PurgeRequest(job_ids=[filler_job]), timeout=RPC_TIMEOUT).job_ids
    assert list(removed) == [filler_job]
    assert not (full_disk.state / "output" / filler_job).exists()
    assert full_disk.server.stop() == 0
    assert integrity_check(full_disk.state / "jobs.sqlite3") == ["ok"]

    with _serve(tmp_path, pki, full_disk.state) as again:
        records = {j.id: j for j in list_all(again.stub())}
        assert filler_job not in records
        assert records[job.id].end_reason == pb.END_REASON_EXITED
        assert wait_ended(again.stub(), submit(again.stub(), shell("true")).id).exit_code == 0
        assert again.stop() == 0


def test_a_job_that_ended_while_the_store_could_not_commit_reads_as_ended(
    full_disk: FullDisk,
) -> None:
    # Watch said ENDED (the engine's live record); Get, List and Purge must say the same,
    # not the last record the store managed to commit (RUNNING): an operator freeing space
    # by purging that job would be told to stop it first.
    stub = full_disk.server.stub()
    job_id = full_disk.job.id
    got = stub.Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT).job
    assert got.state == pb.JOB_STATE_ENDED, f"Get says {pb.JobState.Name(got.state)}"
    listed = {j.id: j for j in list_all(stub)}[job_id]
    assert listed.state == pb.JOB_STATE_ENDED, f"List says {pb.JobState.Name(listed.state)}"
    try:
        stub.Purge(pb.PurgeRequest(job_ids=[job_id]), timeout=RPC_TIMEOUT)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
