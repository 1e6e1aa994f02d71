"""Domain errors reach the client as the status codes of the one table, over the wire."""

from __future__ import annotations

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_server, shell, spec

from worker_core._errors import (
    ConfigError,
    EngineClosed,
    FailedPrecondition,
    InvalidSpec,
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
)
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.errors import FIELD_METADATA_KEY, status_for


def _error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()  # type: ignore[operator]
        if hasattr(result, "__iter__"):
            list(result)
    return info.value


def _field(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(FIELD_METADATA_KEY)


def test_status_table() -> None:
    assert status_for(InvalidSpec("x", "bad"))[0] == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[index]
    assert status_for(JobNotFound("j"))[0] == grpc.StatusCode.NOT_FOUND  # type: ignore[index]
    assert status_for(PermissionDenied("no"))[0] == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[index]
    assert status_for(FailedPrecondition("no"))[0] == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[index]
    assert status_for(EngineClosed("no"))[0] == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[index]
    assert status_for(ResourceExhausted("no"))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[index]
    assert status_for(ConfigError("x")) is None  # not a request error: INTERNAL
    assert status_for(KeyError("x")) is None


@pytest.mark.parametrize("method", ["Get", "Stop", "Tail", "Watch"])
def test_unknown_job_is_not_found(harness: Harness, method: str) -> None:
    stub = harness.stub()
    request = {
        "Get": pb.GetRequest(job_id="0" * 32),
        "Stop": pb.StopRequest(job_id="0" * 32),
        "Tail": pb.TailRequest(job_id="0" * 32),
        "Watch": pb.WatchRequest(job_id="0" * 32),
    }[method]
    error = _error(lambda: getattr(stub, method)(request, timeout=RPC_TIMEOUT))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"no such job: {'0' * 32}"


@pytest.mark.parametrize(
    ("job_spec", "field"),
    [
        (pb.JobSpec(), "command"),
        (spec("/bin/echo", "a\0b"), "args[0]"),
        (pb.JobSpec(command="/bin/true", env={"A": "x\0y"}), "env['A']"),
        (pb.JobSpec(command="/bin/true", cwd="relative"), "cwd"),
        (pb.JobSpec(command="no-such-command-here"), "command"),
        (pb.JobSpec(command="/bin/true", limits=pb.Limits(memory_max=0)), "limits.memory_max"),
        (
            pb.JobSpec(command="/bin/true", limits=pb.Limits(memory_max=2**64 - 1)),
            "limits.memory_max",
        ),
        (pb.JobSpec(command="/bin/true", limits=pb.Limits(cpu=float("nan"))), "limits.cpu"),
        (pb.JobSpec(command="/bin/true", limits=pb.Limits(cpu_weight=20000)), "limits.cpu_weight"),
        # Valid, but no enabled plugin enforces it (no cgroups here): never silently ignored.
        (
            pb.JobSpec(command="/bin/true", limits=pb.Limits(memory_max=1 << 20)),
            "limits.memory_max",
        ),
        (pb.JobSpec(command="/bin/true", isolation=pb.Isolation(uid=2**32 - 1)), "isolation.uid"),
        (pb.JobSpec(command="/bin/true", timeout_seconds=-1), "timeout_seconds"),
        (pb.JobSpec(command="/bin/true", options={"nosuch.key": "1"}), "options.nosuch.key"),
    ],
)
def test_bad_spec_is_invalid_argument(harness: Harness, job_spec: pb.JobSpec, field: str) -> None:
    error = _error(
        lambda: harness.stub().Submit(pb.SubmitRequest(spec=job_spec), timeout=RPC_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == field
    assert error.details().startswith(f"{field}: ")


def test_missing_spec_and_empty_ids(harness: Harness) -> None:
    stub = harness.stub()
    for call in (
        lambda: stub.Submit(pb.SubmitRequest(), timeout=RPC_TIMEOUT),
        lambda: stub.Get(pb.GetRequest(), timeout=RPC_TIMEOUT),
        lambda: stub.Tail(pb.TailRequest(), timeout=RPC_TIMEOUT),
    ):
        assert _error(call).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_stop_and_list_requests(harness: Harness) -> None:
    stub = harness.stub()
    job = stub.Submit(pb.SubmitRequest(spec=spec("/bin/true")), timeout=RPC_TIMEOUT).job
    for grace in (float("nan"), float("inf"), -1.0):
        error = _error(
            lambda g=grace: stub.Stop(
                pb.StopRequest(job_id=job.id, grace_seconds=g), timeout=RPC_TIMEOUT
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _field(error) == "grace_seconds"
    error = _error(lambda: stub.List(pb.ListRequest(states=[42]), timeout=RPC_TIMEOUT))  # type: ignore[list-item]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stop_of_a_finished_job_returns_its_record(harness: Harness) -> None:
    stub = harness.stub()
    job = stub.Submit(pb.SubmitRequest(spec=shell("exit 3")), timeout=RPC_TIMEOUT).job
    harness.engine.wait(job.id, timeout=RPC_TIMEOUT)
    stopped = stub.Stop(pb.StopRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
    assert (stopped.state, stopped.exit_code, stopped.end_reason) == (
        pb.JOB_STATE_ENDED,
        3,
        pb.END_REASON_EXITED,
    )


def test_failed_start_is_a_job_not_an_error(harness: Harness) -> None:
    job = (
        harness.stub()
        .Submit(pb.SubmitRequest(spec=spec("/nonexistent/binary")), timeout=RPC_TIMEOUT)
        .job
    )
    job = harness.stub().Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
    assert job.end_reason == pb.END_REASON_FAILED_TO_START
    assert job.message


def test_oversized_request_is_refused(harness: Harness) -> None:
    error = _error(
        lambda: harness.stub().Submit(
            pb.SubmitRequest(spec=spec("/bin/echo", "x" * (5 << 20))), timeout=RPC_TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_after_engine_close_is_failed_precondition(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_server(tmp_path_factory.mktemp("pki")) as h:
        h.engine.close()
        error = _error(lambda: h.stub().Submit(pb.SubmitRequest(spec=spec("/bin/true")), timeout=5))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
