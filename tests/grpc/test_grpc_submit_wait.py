"""Submit with ``wait_seconds``: one call that starts a job and answers once it has ended."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_rbac_server, shell, spec

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.errors import FIELD_METADATA_KEY

# A role that may start jobs but read none of them, not even its own.
POLICY = """
[roles.submitter]
permissions = ["submit"]

[users]
sam = ["submitter"]
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_rbac_server(tmp_path_factory.mktemp("submit-wait"), POLICY) as h:
        yield h


def _submit(harness: Harness, job_spec: pb.JobSpec, wait: float | None) -> pb.Job:
    request = pb.SubmitRequest(spec=job_spec, wait_seconds=wait)
    return harness.stub("sam").Submit(request, timeout=RPC_TIMEOUT).job


def test_the_answer_is_the_final_record(harness: Harness) -> None:
    job = _submit(harness, shell("sleep 0.2; exit 7"), wait=10)
    assert job.state == pb.JOB_STATE_ENDED
    assert (job.exit_code, job.end_reason) == (7, pb.END_REASON_EXITED)
    # A role without read permission still learns how the job it started ended: it is the
    # record Submit returns anyway, only later.
    assert harness.engine.get(job.id).exit_code == 7


def test_a_job_outlasting_the_wait_is_returned_running(harness: Harness) -> None:
    started = time.monotonic()
    job = _submit(harness, spec("/bin/sleep", "30"), wait=0.3)
    waited = time.monotonic() - started
    try:
        assert job.state == pb.JOB_STATE_RUNNING
        assert job.pid > 0
        # It did wait (a busy host only makes that longer); the call's deadline bounds it.
        assert waited >= 0.25
    finally:
        harness.engine.stop(job.id, force=True, timeout=10)


def test_without_a_wait_the_answer_comes_at_start(harness: Harness) -> None:
    for wait in (None, 0.0):
        job = _submit(harness, spec("/bin/sleep", "30"), wait=wait)
        try:
            assert job.state == pb.JOB_STATE_RUNNING
        finally:
            harness.engine.stop(job.id, force=True, timeout=10)


def test_a_failed_start_answers_at_once(harness: Harness) -> None:
    # The wait (60 s) is longer than the call's deadline (RPC_TIMEOUT): a server that waited
    # it out would fail the call with DEADLINE_EXCEEDED instead of answering.
    assert RPC_TIMEOUT < 60
    job = _submit(harness, spec("/nonexistent/binary"), wait=60)
    assert (job.state, job.end_reason) == (pb.JOB_STATE_ENDED, pb.END_REASON_FAILED_TO_START)


@pytest.mark.parametrize("wait", [-1.0, float("nan"), float("inf"), 3600.5])
def test_a_bad_wait_is_refused_and_starts_nothing(harness: Harness, wait: float) -> None:
    before = len(harness.engine.list())
    with pytest.raises(grpc.RpcError) as info:
        _submit(harness, spec("/bin/true"), wait=wait)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata() or ())[FIELD_METADATA_KEY] == "wait_seconds"
    assert len(harness.engine.list()) == before, "a refused Submit created a job"


def test_a_caller_giving_up_leaves_the_job_running(harness: Harness) -> None:
    # The deadline passes while the server waits: the call fails, the job is not touched.
    before = {job.id for job in harness.engine.list()}
    with pytest.raises(grpc.RpcError) as info:
        harness.stub("sam").Submit(
            pb.SubmitRequest(spec=spec("/bin/sleep", "30"), wait_seconds=20), timeout=2
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    (job,) = [job for job in harness.engine.list() if job.id not in before]
    try:
        assert not job.is_finished
    finally:
        harness.engine.stop(job.id, force=True, timeout=10)


def test_the_server_survives_many_waiting_submits(harness: Harness) -> None:
    # Waiting costs a coroutine, not a thread: 64 concurrent waits all answer.
    stub = harness.stub("sam")
    calls = [
        stub.Submit.future(
            pb.SubmitRequest(spec=shell(f"sleep 0.3; exit {i % 5}"), wait_seconds=30),
            timeout=RPC_TIMEOUT,
        )
        for i in range(64)
    ]
    codes = sorted(call.result().job.exit_code for call in calls)
    assert codes == sorted(i % 5 for i in range(64))
