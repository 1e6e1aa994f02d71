"""Job id prefixes over the wire: every call that takes a job id takes a unique prefix of one
the caller may read; several matches are INVALID_ARGUMENT listing them, a job the caller may
not read is NOT_FOUND however it is named.

The server runs the real ``rbac`` plugin with the example policy (examples/policy.toml:
alice and bob are operators who read their own jobs, viewer and admin read every job), with
the memory job store and with the sqlite one.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, collect, running_server, shell, spec

from worker_core import JobSpec, Principal
from worker_core._config import Config, EngineSettings
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.errors import FIELD_METADATA_KEY

POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
#: The most jobs made while looking for ids that share a prefix (a few hundred are expected).
MAX_JOBS = 6000


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp(f"prefix-{request.param}")
    plugins = ["rbac"] + ([] if request.param == "memory" else [request.param])
    settings = EngineSettings(
        state_dir=None if request.param == "memory" else str(directory / "state")
    )
    config = Config(engine=settings, plugins={"rbac": {"policy": str(POLICY)}})
    with running_server(directory / "pki", plugins=plugins, config=config) as h:
        yield h


@attrs.frozen
class Shared:
    """Four-character prefixes shared by several jobs."""

    #: A prefix of two or more jobs, all of alice, and their ids.
    alices: str
    alice_ids: list[str]
    #: A prefix of exactly two jobs: one of alice, one of bob.
    mixed: str
    alice_id: str
    bob_id: str


@pytest.fixture(scope="module")
def shared(harness: Harness) -> Shared:
    """Jobs of alice and bob, made until their ids share the prefixes :class:`Shared` needs.

    Ids are random (uuid4): with n jobs, two share a 4-character prefix once n is a few
    hundred (the birthday bound of 16**4), so the loop ends long before its bound.
    """
    groups: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    alices: set[str] = set()
    mixed: set[str] = set()
    for i in range(MAX_JOBS):
        owner = ("alice", "bob")[i % 2]
        job = harness.engine.submit(JobSpec("/bin/true"), Principal(owner))
        prefix = job.id[:4]
        groups[prefix].append((owner, job.id))
        names = sorted(name for name, _ in groups[prefix])
        # A group that gains a job may stop being what was wanted.
        alices.discard(prefix)
        mixed.discard(prefix)
        if len(names) >= 2 and set(names) == {"alice"}:
            alices.add(prefix)
        elif names == ["alice", "bob"]:
            mixed.add(prefix)
        if alices and mixed:
            break
    assert alices and mixed, "no shared prefixes: are ids not random?"
    alike, either = min(alices), min(mixed)
    by_owner = dict(groups[either])
    return Shared(
        alices=alike,
        alice_ids=sorted(job_id for _, job_id in groups[alike]),
        mixed=either,
        alice_id=by_owner["alice"],
        bob_id=by_owner["bob"],
    )


def _error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__"):
            list(result)  # type: ignore[call-overload]
    return info.value


def _field(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(FIELD_METADATA_KEY)


def _by_id(harness: Harness, cn: str, method: str, job_id: str) -> Any:
    """Call ``method`` about ``job_id`` as ``cn``; its answer (a Job, or a Tail's bytes)."""
    stub = harness.stub(cn)
    if method == "Get":
        return stub.Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT).job
    if method == "Stop":
        return stub.Stop(pb.StopRequest(job_id=job_id, force=True), timeout=RPC_TIMEOUT).job
    if method == "Tail":
        return collect(stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT))
    if method == "Tail until_now":
        request = pb.TailRequest(job_id=job_id, until_now=True)
        return collect(stub.Tail(request, timeout=RPC_TIMEOUT))
    if method == "Watch":
        return list(stub.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT))[-1]
    if method == "Purge":
        return stub.Purge(pb.PurgeRequest(job_ids=[job_id]), timeout=RPC_TIMEOUT).job_ids
    raise AssertionError(method)


BY_ID = ["Get", "Stop", "Tail", "Tail until_now", "Watch", "Purge"]
READS = ["Get", "Stop", "Tail", "Tail until_now", "Watch"]  # answer about the job, keep it


# --- a unique prefix --------------------------------------------------------------------------


def test_a_unique_prefix_names_the_job_in_every_call(harness: Harness) -> None:
    stub = harness.stub("alice")
    job = stub.Submit(
        pb.SubmitRequest(spec=shell("echo out; echo err >&2"), wait_seconds=RPC_TIMEOUT),
        timeout=2 * RPC_TIMEOUT,
    ).job
    assert job.state == pb.JOB_STATE_ENDED
    prefix = job.id[:10]
    output = {pb.STREAM_STDOUT: b"out\n", pb.STREAM_STDERR: b"err\n"}
    assert _by_id(harness, "alice", "Get", prefix).id == job.id
    assert _by_id(harness, "alice", "Tail", prefix) == output
    assert _by_id(harness, "alice", "Tail until_now", prefix) == output
    assert _by_id(harness, "alice", "Watch", prefix).id == job.id
    assert _by_id(harness, "alice", "Stop", prefix).end_reason == pb.END_REASON_EXITED
    assert _by_id(harness, "alice", "Purge", prefix) == [job.id]  # the full id removed
    assert _error(lambda: _by_id(harness, "alice", "Get", job.id)).code() == (
        grpc.StatusCode.NOT_FOUND
    )


def test_a_running_job_is_stopped_by_its_prefix(harness: Harness) -> None:
    job = harness.stub("bob").Submit(
        pb.SubmitRequest(spec=spec("sleep", "30")), timeout=RPC_TIMEOUT
    )
    stopped = _by_id(harness, "bob", "Stop", job.job.id[:6])
    assert (stopped.id, stopped.state, stopped.end_reason) == (
        job.job.id,
        pb.JOB_STATE_ENDED,
        pb.END_REASON_STOPPED,
    )


def test_the_smallest_prefix_is_four_characters(harness: Harness) -> None:
    job = harness.stub("alice").Submit(
        pb.SubmitRequest(spec=spec("/bin/true")), timeout=RPC_TIMEOUT
    )
    for method in BY_ID:
        error = _error(lambda m=method: _by_id(harness, "alice", m, job.job.id[:3]))  # type: ignore[misc]
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert "at least 4 characters" in error.details()
        assert _field(error) in ("job_id", "job_ids[0]")


# --- several matches --------------------------------------------------------------------------


@pytest.mark.parametrize("method", BY_ID)
def test_a_prefix_of_several_of_the_callers_jobs_lists_them(
    harness: Harness, shared: Shared, method: str
) -> None:
    error = _error(lambda: _by_id(harness, "alice", method, shared.alices))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == "job_id"
    assert f"'{shared.alices}' matches several jobs: " in error.details()
    for job_id in shared.alice_ids[:10]:
        assert job_id in error.details()


@pytest.mark.parametrize("method", READS)
def test_a_prefix_resolves_among_the_jobs_the_caller_may_read(
    harness: Harness, shared: Shared, method: str
) -> None:
    # alice and bob each read one of the two jobs with this prefix: to each it is unique.
    for cn, own, other in (
        ("alice", shared.alice_id, shared.bob_id),
        ("bob", shared.bob_id, shared.alice_id),
    ):
        answer = _by_id(harness, cn, method, shared.mixed)
        if method.startswith("Tail"):
            assert answer == {}  # /bin/true wrote nothing; the point is it was not refused
        else:
            assert answer.id == own and answer.owner == cn
        assert other not in str(answer)


@pytest.mark.parametrize("cn", ["viewer", "admin"])
def test_who_reads_every_job_sees_the_ambiguity(harness: Harness, shared: Shared, cn: str) -> None:
    error = _error(lambda: _by_id(harness, cn, "Get", shared.mixed))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert shared.alice_id in error.details() and shared.bob_id in error.details()


# --- jobs the caller may not read -------------------------------------------------------------


@pytest.mark.parametrize("method", BY_ID)
@pytest.mark.parametrize("cn", ["bob", "operator", "stranger"])
def test_a_job_the_caller_may_not_read_is_not_found_by_prefix_or_id(
    harness: Harness, shared: Shared, method: str, cn: str
) -> None:
    alice_only = shared.alice_ids[0]
    for name in (alice_only, alice_only[:12], shared.alices):
        error = _error(lambda n=name: _by_id(harness, cn, method, n))  # type: ignore[misc]
        assert error.code() == grpc.StatusCode.NOT_FOUND, (name, error.details())
        # Nothing about alice's jobs leaks, not even their ids.
        assert not any(job_id in error.details() for job_id in shared.alice_ids if job_id != name)
    assert _by_id(harness, "alice", "Get", alice_only).id == alice_only  # still there


@pytest.mark.parametrize("name", ["zzzz", "xyz!", "../../etc", "0" * 31 + "g"])
def test_what_is_not_a_prefix_is_not_found(harness: Harness, name: str) -> None:
    error = _error(lambda: _by_id(harness, "admin", "Get", name))
    assert error.code() == grpc.StatusCode.NOT_FOUND
