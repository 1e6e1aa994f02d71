"""Listing, retention and purge over durable records, against a real ``worker serve
--state-dir DIR`` (sqlite records, spool output), across restarts.

- 2,000 jobs paged through 100 at a time while 4 clients keep submitting, and the server
  restarted half-way with the next page's token in hand: every job there when the listing
  began appears exactly once, newest first, and none submitted after it began.
- Retention at start: with ``max_finished_jobs`` and then ``max_finished_output_bytes``
  lowered, the oldest finished jobs go (records and output files), a held job never.
- ``worker job purge --ended-before WHEN`` through the real CLI removes the records and the
  files, for good (a restart does not bring them back).
"""

from __future__ import annotations

import datetime
import subprocess
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
from grpc_certs import TestPKI, make_pki
from grpc_harness import WORKER, shell
from reliability_harness import (
    RPC_TIMEOUT,
    ServerProcess,
    client_env,
    list_all,
    submit,
    wait_ended,
    worker_serve,
    write_config,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

JOBS = 2000
PAGE = 100
SUBMITTERS = 16


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path / "pki")


def _serve(
    tmp_path: Path, pki: TestPKI, state: Path, engine: str = ""
) -> AbstractContextManager[ServerProcess]:
    config = write_config(tmp_path / "server.toml", f"[engine]\nstop_grace = 1.0\n{engine}")
    return worker_serve(
        tmp_path / "runs", "--state-dir", str(state), "--config", str(config), pki=pki
    )


def _submit_many(server: ServerProcess, count: int) -> list[str]:
    """``count`` jobs of ``true`` from SUBMITTERS clients, each run to its end."""
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(index: int) -> None:
        stub = server.stub(f"submitter-{index}")
        for _ in range(index, count, SUBMITTERS):
            try:
                job = stub.Submit(
                    pb.SubmitRequest(spec=pb.JobSpec(command="/bin/true"), wait_seconds=30),
                    timeout=RPC_TIMEOUT + 30,
                ).job
            except grpc.RpcError as exc:
                with lock:
                    errors.append(f"{exc.code()}: {exc.details()}")
                return
            with lock:
                ids.append(job.id)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not errors, errors[:3]
    assert len(ids) == count
    return ids


def test_pages_over_2000_jobs_with_concurrent_submits_and_a_restart_skip_and_repeat_nothing(
    tmp_path: Path, pki: TestPKI
) -> None:
    state = tmp_path / "state"
    with _serve(tmp_path, pki, state) as server:
        existing = set(_submit_many(server, JOBS))
        stop = threading.Event()
        later: list[str] = []  # submitted after the first page came back
        first_page_done = threading.Event()
        errors: list[str] = []

        def keep_submitting(index: int) -> None:
            stub = server.stub(f"during-{index}")
            while not stop.is_set():
                began_after_first_page = first_page_done.is_set()
                try:
                    job = submit(stub, pb.JobSpec(command="/bin/true"))
                except grpc.RpcError as exc:
                    if not stop.is_set():
                        errors.append(f"{exc.code()}: {exc.details()}")
                    return
                if began_after_first_page:
                    later.append(job.id)

        submitters = [threading.Thread(target=keep_submitting, args=(i,)) for i in range(4)]
        for thread in submitters:
            thread.start()
        try:
            stub = server.stub()
            seen: list[pb.Job] = []
            token = ""
            while len(seen) < JOBS // 2:
                page = stub.List(pb.ListRequest(page_size=PAGE, page_token=token), timeout=30)
                first_page_done.set()
                assert len(page.jobs) <= PAGE and page.next_page_token
                seen.extend(page.jobs)
                token = page.next_page_token
        finally:
            stop.set()
            for thread in submitters:
                thread.join(60)
        assert not errors, errors[:3]
        assert len(later) > 0, "nothing was submitted while the listing went on"
        assert server.stop() == 0

    # The token outlives the server that made it.
    with _serve(tmp_path, pki, state) as restarted:
        stub = restarted.stub()
        pages = 0
        while token:
            page = stub.List(pb.ListRequest(page_size=PAGE, page_token=token), timeout=30)
            assert len(page.jobs) <= PAGE
            seen.extend(page.jobs)
            token = page.next_page_token
            pages += 1
        ids = [job.id for job in seen]
        assert len(ids) == len(set(ids)), "a job was listed twice"
        assert existing <= set(ids), f"{len(existing - set(ids))} jobs were skipped"
        assert not set(later) & set(ids), "a job submitted after the listing began was listed"
        # Newest first: concurrent submits may commit in another order than their clocks
        # read, but each client's jobs (one Submit after the other) are in its order.
        for owner in {job.owner for job in seen}:
            created = [job.created_at for job in seen if job.owner == owner]
            assert created == sorted(created, reverse=True), f"{owner}'s jobs: not newest first"
        assert pages >= 9
        assert restarted.stop() == 0


def _output_dirs(state: Path) -> set[str]:
    return {p.name for p in (state / "output").iterdir()}


def test_retention_at_start_removes_the_oldest_finished_records_and_files_never_a_held_job(
    tmp_path: Path, pki: TestPKI
) -> None:
    state = tmp_path / "state"
    with _serve(tmp_path, pki, state) as server:
        stub = server.stub()
        held = stub.Submit(
            pb.SubmitRequest(spec=pb.JobSpec(command="/bin/echo", args=["held"], hold=True)),
            timeout=RPC_TIMEOUT,
        ).job
        assert held.state == pb.JOB_STATE_HELD
        # Job i writes 1000 * (i + 1) bytes: the output bound below counts them.
        finished = [
            wait_ended(stub, submit(stub, shell(f"head -c {1000 * (i + 1)} /dev/zero")).id).id
            for i in range(12)
        ]
        assert set(finished) <= _output_dirs(state)
        assert server.stop() == 0

    with _serve(tmp_path, pki, state, "max_finished_jobs = 5\n") as fewer:
        records = {job.id: job for job in list_all(fewer.stub())}
        assert set(records) == {held.id, *finished[-5:]}
        assert records[held.id].state == pb.JOB_STATE_HELD
        assert _output_dirs(state) <= set(finished[-5:]) | {held.id}
        assert fewer.stop() == 0

    # The newest first while they fit: 12000 + 11000 bytes fit in 25000, 10000 more do not.
    with _serve(tmp_path, pki, state, "max_finished_output_bytes = 25000\n") as smaller:
        records = {job.id: job for job in list_all(smaller.stub())}
        assert set(records) == {held.id, *finished[-2:]}
        assert _output_dirs(state) <= set(finished[-2:]) | {held.id}
        # Held through three servers, it still runs once released.
        released = smaller.stub().Release(pb.ReleaseRequest(job_id=held.id), timeout=RPC_TIMEOUT)
        assert released.job.id == held.id
        ended = wait_ended(smaller.stub(), held.id)
        assert ended.exit_code == 0 and ended.end_reason == pb.END_REASON_EXITED
        assert smaller.stop() == 0


def test_purge_ended_before_through_the_cli_removes_records_and_files_for_good(
    tmp_path: Path, pki: TestPKI
) -> None:
    state = tmp_path / "state"
    with _serve(tmp_path, pki, state) as server:
        stub = server.stub()
        old = [wait_ended(stub, submit(stub, shell("echo old")).id) for _ in range(3)]
        boundary = old[-1].ended_at
        time.sleep(0.05)  # the next jobs are created after the boundary on any clock tick
        new = [wait_ended(stub, submit(stub, shell("echo new")).id) for _ in range(2)]
        assert new[0].created_at > boundary
        when = datetime.datetime.fromtimestamp(boundary + 0.01, tz=datetime.UTC).isoformat()
        done = subprocess.run(
            [*WORKER, "job", "purge", "--ended-before", when],
            capture_output=True,
            text=True,
            env=client_env(server, tmp_path),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split()) == sorted(job.id for job in old)
        assert {job.id for job in list_all(stub)} == {job.id for job in new}
        assert _output_dirs(state) == {job.id for job in new}
        with pytest.raises(grpc.RpcError) as caught:
            stub.Get(pb.GetRequest(job_id=old[0].id), timeout=RPC_TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert server.stop() == 0

    with _serve(tmp_path, pki, state) as restarted:
        assert {job.id for job in list_all(restarted.stub())} == {job.id for job in new}
        assert restarted.stop() == 0
