"""The real ``rbac`` plugin behind the gRPC server: every method, every kind of caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_rbac_server, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

pytest.importorskip("worker_plugins.rbac.plugin")

POLICY = """
[roles.admin]
permissions = ["submit", "stop:all", "read:all"]

[roles.operator]
permissions = ["submit", "stop:own", "read:own"]

[roles.viewer]
permissions = ["read:all"]

[users]
root = ["admin"]
alice = ["operator"]
bob = ["operator"]
vera = ["viewer"]
"""

OK, NOT_FOUND, DENIED = "ok", grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_rbac_server(tmp_path_factory.mktemp("rbac"), POLICY) as h:
        yield h


@pytest.fixture
def alice_job(harness: Harness) -> Iterator[str]:
    job = (
        harness.stub("alice")
        .Submit(pb.SubmitRequest(spec=shell("echo hi; sleep 30")), timeout=RPC_TIMEOUT)
        .job
    )
    yield job.id
    harness.engine.stop(job.id, force=True, timeout=10)


def _outcome(call: Callable[[], object]) -> object:
    try:
        result = call()
        if hasattr(result, "__next__"):
            next(result)  # type: ignore[call-overload]
            result.cancel()  # type: ignore[attr-defined]
        return OK
    except grpc.RpcError as exc:
        return exc.code()


@pytest.mark.parametrize(
    ("cn", "read", "stop"),
    [
        ("alice", OK, OK),  # the owner
        ("bob", NOT_FOUND, NOT_FOUND),  # another operator: cannot even see it
        ("vera", OK, DENIED),  # a viewer sees it, may not stop it
        ("root", OK, OK),
        ("stranger", NOT_FOUND, NOT_FOUND),  # not in the policy
    ],
)
def test_matrix_on_a_job_of_alice(
    harness: Harness, alice_job: str, cn: str, read: object, stop: object
) -> None:
    stub = harness.stub(cn)
    assert _outcome(lambda: stub.Get(pb.GetRequest(job_id=alice_job), timeout=RPC_TIMEOUT)) == read
    assert (
        _outcome(lambda: stub.Tail(pb.TailRequest(job_id=alice_job), timeout=RPC_TIMEOUT)) == read
    )
    assert (
        _outcome(lambda: stub.Watch(pb.WatchRequest(job_id=alice_job), timeout=RPC_TIMEOUT)) == read
    )
    listed = alice_job in [j.id for j in stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs]
    assert listed == (read == OK)
    assert (
        _outcome(
            lambda: stub.Stop(
                pb.StopRequest(job_id=alice_job, grace_seconds=0), timeout=RPC_TIMEOUT
            )
        )
        == stop
    )


@pytest.mark.parametrize(
    ("cn", "submit"), [("alice", OK), ("root", OK), ("vera", DENIED), ("stranger", DENIED)]
)
def test_matrix_submit(harness: Harness, cn: str, submit: object, tmp_path: Path) -> None:
    stub = harness.stub(cn)
    assert (
        _outcome(lambda: stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT))
        == submit
    )
