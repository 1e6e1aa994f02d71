"""Purge over the wire, under the example policy (examples/policy.toml): admin may purge every
finished job, an operator (alice, bob, operator) only their own, viewer none. Named jobs go
all or nothing; a filter takes every match the caller may purge; running jobs never go.
With the memory job store and with the sqlite one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_server, shell, spec

from worker_core._config import Config, EngineSettings
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.errors import FIELD_METADATA_KEY

POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp(f"purge-{request.param}")
    plugins = ["rbac"] + ([] if request.param == "memory" else [request.param])
    settings = EngineSettings(
        state_dir=None if request.param == "memory" else str(directory / "state")
    )
    config = Config(engine=settings, plugins={"rbac": {"policy": str(POLICY)}})
    with running_server(directory / "pki", plugins=plugins, config=config) as h:
        yield h


def _finished(harness: Harness, cn: str, script: str = "echo output") -> str:
    request = pb.SubmitRequest(spec=shell(script), wait_seconds=RPC_TIMEOUT)
    job = harness.stub(cn).Submit(request, timeout=2 * RPC_TIMEOUT).job
    assert job.state == pb.JOB_STATE_ENDED
    return job.id


def _running(harness: Harness, cn: str) -> str:
    return (
        harness.stub(cn)
        .Submit(pb.SubmitRequest(spec=spec("sleep", "30")), timeout=RPC_TIMEOUT)
        .job.id
    )


def _purge(harness: Harness, cn: str, **fields: object) -> list[str]:
    request = pb.PurgeRequest(**fields)  # type: ignore[arg-type]
    return list(harness.stub(cn).Purge(request, timeout=RPC_TIMEOUT).job_ids)


def _refusal(harness: Harness, cn: str, **fields: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _purge(harness, cn, **fields)
    return info.value


def _exists(harness: Harness, job_id: str) -> bool:
    try:
        harness.stub("admin").Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


def test_a_purged_job_is_gone_record_and_output(harness: Harness) -> None:
    job_id = _finished(harness, "alice")
    stub = harness.stub("alice")
    tail = list(stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT))
    assert b"".join(m.data for m in tail) == b"output\n"
    assert _purge(harness, "alice", job_ids=[job_id]) == [job_id]
    for call in (
        lambda: stub.Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT),
        lambda: list(stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)),
        lambda: list(stub.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT)),
        lambda: stub.Purge(pb.PurgeRequest(job_ids=[job_id]), timeout=RPC_TIMEOUT),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    listed = harness.stub("admin").List(pb.ListRequest(page_size=1000), timeout=RPC_TIMEOUT)
    assert job_id not in {job.id for job in listed.jobs}


def test_named_jobs_by_prefix_and_repeated_are_removed_once(harness: Harness) -> None:
    first, second = _finished(harness, "bob"), _finished(harness, "bob")
    assert _purge(harness, "bob", job_ids=[first[:12], second, first]) == [first, second]
    assert not _exists(harness, first) and not _exists(harness, second)


@pytest.mark.parametrize(
    ("cn", "code"),
    [
        ("bob", grpc.StatusCode.NOT_FOUND),  # may not read it: it does not exist for bob
        ("operator", grpc.StatusCode.NOT_FOUND),
        ("viewer", grpc.StatusCode.PERMISSION_DENIED),  # reads every job, purges none
        ("stranger", grpc.StatusCode.NOT_FOUND),  # not in the policy
    ],
)
def test_who_may_not_purge_a_job_of_alice(harness: Harness, cn: str, code: grpc.StatusCode) -> None:
    job_id = _finished(harness, "alice")
    assert _refusal(harness, cn, job_ids=[job_id]).code() == code
    assert _exists(harness, job_id)
    assert _purge(harness, "admin", job_ids=[job_id]) == [job_id]  # purge:all


def test_a_running_job_is_failed_precondition_and_nothing_is_removed(harness: Harness) -> None:
    done, running = _finished(harness, "alice"), _running(harness, "alice")
    try:
        error = _refusal(harness, "alice", job_ids=[done, running])
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert running in error.details() and "running" in error.details()
        assert _exists(harness, done) and _exists(harness, running)  # all or nothing
        assert _refusal(harness, "admin", job_ids=[running]).code() == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    finally:
        harness.engine.stop(running, grace=0)
    assert _purge(harness, "alice", job_ids=[done, running]) == [done, running]


def test_one_unknown_id_removes_nothing(harness: Harness) -> None:
    job_id = _finished(harness, "alice")
    error = _refusal(harness, "alice", job_ids=[job_id, "0" * 32])
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _exists(harness, job_id)


def test_a_filter_removes_the_callers_finished_jobs_only(harness: Harness) -> None:
    # "operator" is the owner under test: no other test here purges by filter as operator.
    old = [_finished(harness, "operator") for _ in range(3)]
    cutoff = time.time()
    time.sleep(0.01)  # a job ending after this ended strictly after the cutoff
    newer = _finished(harness, "operator")
    running = _running(harness, "operator")
    bobs = _finished(harness, "bob")
    try:
        assert _purge(harness, "operator", ended_before=0.0) == []  # nothing ended by 1970
        assert sorted(_purge(harness, "operator", ended_before=cutoff)) == sorted(old)
        assert all(_exists(harness, j) for j in (newer, running, bobs))
        # An operator's filter on someone else's jobs matches nothing it may purge.
        assert _purge(harness, "operator", owner="bob", ended_before=time.time()) == []
        assert _exists(harness, bobs)
        assert _purge(harness, "operator", owner="operator") == [newer]  # running: kept
        assert _exists(harness, running)
    finally:
        harness.engine.stop(running, grace=0)


def test_admin_purges_one_owners_jobs_by_filter(harness: Harness) -> None:
    bobs = [_finished(harness, "bob") for _ in range(2)]
    alices = _finished(harness, "alice")
    removed = _purge(harness, "admin", owner="bob", ended_before=time.time())
    assert set(bobs) <= set(removed)
    assert not any(_exists(harness, j) for j in bobs)
    assert _exists(harness, alices)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "job_ids"),  # "everything" must be asked for by a filter
        ({"job_ids": ["abcd1234"], "ended_before": 5.0}, "ended_before"),
        ({"job_ids": ["abcd1234"], "owner": "bob"}, "owner"),
        ({"job_ids": [""]}, "job_ids[0]"),
        ({"ended_before": float("nan")}, "ended_before"),
        ({"ended_before": -1.0}, "ended_before"),
    ],
)
def test_bad_purge_requests_name_the_field(
    harness: Harness, fields: dict[str, object], field: str
) -> None:
    error = _refusal(harness, "admin", **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata() or ()).get(FIELD_METADATA_KEY) == field
