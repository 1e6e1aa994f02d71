"""Idempotent Submit over the wire: the same key by the same caller returns the first job and
starts nothing; another caller's key, or another key, is another job. With the memory job
store and with the sqlite one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_server, shell

from worker_core._config import Config, EngineSettings
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.errors import FIELD_METADATA_KEY


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp(f"idempotency-{request.param}")
    if request.param == "memory":
        plugins, config = [], Config()
    else:
        plugins = [request.param]
        config = Config(engine=EngineSettings(state_dir=str(directory / "state")))
    with running_server(directory / "pki", plugins=plugins, config=config) as h:
        yield h


def _appending(path: Path, word: str) -> pb.JobSpec:
    """A job that leaves a trace each time it runs: one line in ``path``."""
    return shell(f"echo {word} >> {path}")


def _submit(harness: Harness, cn: str, job_spec: pb.JobSpec, key: str) -> pb.Job:
    request = pb.SubmitRequest(spec=job_spec, idempotency_key=key)
    return harness.stub(cn).Submit(request, timeout=RPC_TIMEOUT).job


def _runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_the_same_key_twice_is_one_job_that_ran_once(harness: Harness, tmp_path: Path) -> None:
    trace = tmp_path / "runs"
    first = _submit(harness, "alice", _appending(trace, "first"), "nightly-2024-05-01")
    harness.engine.wait(first.id, RPC_TIMEOUT)
    # A retry, even with another spec: the first job's record, nothing started.
    again = _submit(harness, "alice", _appending(trace, "second"), "nightly-2024-05-01")
    assert again.id == first.id
    assert again.idempotency_key == "nightly-2024-05-01"
    assert again.state == pb.JOB_STATE_ENDED and again.exit_code == 0
    assert list(again.spec.args) == list(first.spec.args)
    assert _runs(trace) == ["first"]
    listed = harness.stub("alice").List(
        pb.ListRequest(owner="alice", page_size=1000), timeout=RPC_TIMEOUT
    )
    assert [j.id for j in listed.jobs if j.idempotency_key == "nightly-2024-05-01"] == [first.id]


def test_a_key_is_the_callers_own(harness: Harness, tmp_path: Path) -> None:
    trace = tmp_path / "runs"
    alices = _submit(harness, "alice", _appending(trace, "alice"), "shared-key")
    bobs = _submit(harness, "bob", _appending(trace, "bob"), "shared-key")
    other = _submit(harness, "alice", _appending(trace, "other"), "another-key")
    assert len({alices.id, bobs.id, other.id}) == 3
    for job in (alices, bobs, other):
        harness.engine.wait(job.id, RPC_TIMEOUT)
    assert sorted(_runs(trace)) == ["alice", "bob", "other"]
    assert _submit(harness, "bob", _appending(trace, "x"), "shared-key").id == bobs.id


def test_no_key_is_a_new_job_every_time(harness: Harness, tmp_path: Path) -> None:
    trace = tmp_path / "runs"
    ids = {_submit(harness, "alice", _appending(trace, "run"), "").id for _ in range(3)}
    assert len(ids) == 3
    for job_id in ids:
        harness.engine.wait(job_id, RPC_TIMEOUT)
    assert _runs(trace) == ["run"] * 3


def test_concurrent_submits_with_one_key_start_one_job(harness: Harness, tmp_path: Path) -> None:
    trace = tmp_path / "runs"
    barrier = threading.Barrier(8)

    def submit(_: int) -> str:
        barrier.wait(RPC_TIMEOUT)
        return _submit(harness, "alice", _appending(trace, "run"), "race").id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))
    assert len(ids) == 1
    harness.engine.wait(ids.pop(), RPC_TIMEOUT)
    assert _runs(trace) == ["run"]


def test_submit_wait_with_a_key_returns_the_ended_job(harness: Harness, tmp_path: Path) -> None:
    request = pb.SubmitRequest(
        spec=shell("exit 7"), idempotency_key="waited", wait_seconds=RPC_TIMEOUT
    )
    stub = harness.stub("alice")
    first = stub.Submit(request, timeout=2 * RPC_TIMEOUT).job
    again = stub.Submit(request, timeout=2 * RPC_TIMEOUT).job
    assert first.id == again.id
    assert (again.state, again.exit_code) == (pb.JOB_STATE_ENDED, 7)


@pytest.mark.parametrize("key", ["a\nb", "tab\there", "x" * 129, "\x7f"])
def test_a_bad_key_is_invalid_argument_and_starts_nothing(harness: Harness, key: str) -> None:
    before = {job.id for job in harness.engine.list()}
    with pytest.raises(grpc.RpcError) as info:
        _submit(harness, "alice", shell("true"), key)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata() or ()).get(FIELD_METADATA_KEY) == "idempotency_key"
    assert {job.id for job in harness.engine.list()} == before
