"""List over the wire: pages newest first, filters, and refusals that name the field.

Each test module's server runs with the memory job store (the library's default) and with
the sqlite one (``worker serve``'s), so both go through the same wire behaviour. Every test
labels its jobs with a value of its own and lists by that label, so tests sharing the
module's server do not see each other's jobs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_server, spec, wait_for

from worker_core._config import Config, EngineSettings
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc
from worker_plugins.grpc_transport.errors import FIELD_METADATA_KEY
from worker_plugins.grpc_transport.servicer import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


def store_setup(store: str, directory: Path) -> tuple[list[str], Config]:
    """Plugins and configuration of a server keeping its records in ``store``."""
    if store == "memory":
        return [], Config()
    state = directory / "state"
    return [store], Config(engine=EngineSettings(state_dir=str(state)))


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp(f"list-{request.param}")
    plugins, config = store_setup(request.param, directory)
    with running_server(directory / "pki", plugins=plugins, config=config) as h:
        yield h


def _tag() -> dict[str, str]:
    return {"test": uuid.uuid4().hex[:12]}


def _submit(stub: pb_grpc.WorkerStub, job_spec: pb.JobSpec) -> str:
    return stub.Submit(pb.SubmitRequest(spec=job_spec), timeout=RPC_TIMEOUT).job.id


def _true(labels: dict[str, str], name: str = "") -> pb.JobSpec:
    job_spec = spec("/bin/true")
    job_spec.labels.update(labels)
    job_spec.name = name
    return job_spec


def _all_pages(stub: pb_grpc.WorkerStub, request: pb.ListRequest) -> list[pb.Job]:
    jobs: list[pb.Job] = []
    while True:
        response = stub.List(request, timeout=RPC_TIMEOUT)
        jobs.extend(response.jobs)
        if not response.next_page_token:
            return jobs
        request.page_token = response.next_page_token


def _error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def _field(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(FIELD_METADATA_KEY)


# --- pages ---------------------------------------------------------------------------------


def test_pages_over_300_jobs_skip_and_repeat_nothing_while_jobs_are_submitted(
    harness: Harness,
) -> None:
    stub = harness.stub()
    tag = _tag()
    initial = [_submit(stub, _true(tag)) for _ in range(300)]  # one by one: a known order

    extra: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_submitting() -> None:
        other = harness.stub("bob")
        try:
            while not stop.is_set() and len(extra) < 400:
                extra.append(_submit(other, _true(tag)))
        except BaseException as exc:  # reported by the test, not lost on this thread
            errors.append(exc)

    submitter = threading.Thread(target=keep_submitting)
    submitter.start()
    seen: list[str] = []
    pages = 0
    try:
        token = ""
        while True:
            response = stub.List(
                pb.ListRequest(labels=tag, page_size=37, page_token=token), timeout=RPC_TIMEOUT
            )
            assert len(response.jobs) <= 37
            seen.extend(job.id for job in response.jobs)
            pages += 1
            token = response.next_page_token
            if not token:
                break
            # Make sure new jobs really arrive between this page and the next.
            before = len(extra)
            wait_for(lambda b=before: len(extra) > b or errors, what="a concurrent submit")
    finally:
        stop.set()
        submitter.join(RPC_TIMEOUT)
    assert not errors, errors
    assert extra, "no job was submitted while paging"
    assert len(seen) == len(set(seen)), "a job was listed twice"
    assert set(initial) <= set(seen), "a job that existed before the first page was skipped"
    assert set(seen) <= set(initial) | set(extra)
    assert pages >= 300 // 37
    # Newest first: the jobs submitted one by one come in reverse order.
    assert [job_id for job_id in seen if job_id in set(initial)] == initial[::-1]


def test_page_size_default_and_maximum(harness: Harness) -> None:
    stub = harness.stub()
    tag = _tag()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: _submit(stub, _true(tag)), range(DEFAULT_PAGE_SIZE + 5)))
    first = stub.List(pb.ListRequest(labels=tag), timeout=RPC_TIMEOUT)
    assert len(first.jobs) == DEFAULT_PAGE_SIZE and first.next_page_token
    rest = stub.List(
        pb.ListRequest(labels=tag, page_token=first.next_page_token), timeout=RPC_TIMEOUT
    )
    assert len(rest.jobs) == 5 and not rest.next_page_token
    # More than the maximum is served as the maximum, not refused.
    huge = stub.List(pb.ListRequest(page_size=2**32 - 1), timeout=RPC_TIMEOUT)
    assert 0 < len(huge.jobs) <= MAX_PAGE_SIZE
    one = stub.List(pb.ListRequest(labels=tag, page_size=1), timeout=RPC_TIMEOUT)
    assert len(one.jobs) == 1 and one.next_page_token


def test_an_empty_listing_has_no_token(harness: Harness) -> None:
    response = harness.stub().List(pb.ListRequest(labels=_tag()), timeout=RPC_TIMEOUT)
    assert list(response.jobs) == [] and response.next_page_token == ""


# --- filters -------------------------------------------------------------------------------


def test_filters_by_name_label_state_owner_and_time(harness: Harness) -> None:
    alice, bob = harness.stub("alice"), harness.stub("bob")
    tag = _tag()
    team_a = {**tag, "team": "a"}
    alpha1 = _submit(alice, _true({**team_a, "tier": "1"}, name="alpha"))
    alpha2 = _submit(alice, _true(team_a, name="alpha"))
    for job_id in (alpha1, alpha2):
        harness.engine.wait(job_id, RPC_TIMEOUT)
    between = time.time()
    time.sleep(0.01)  # the next record's created_at is strictly later
    beta = _submit(bob, _true({**tag, "team": "b"}, name="beta"))
    sleeper_spec = spec("sleep", "30")
    sleeper_spec.labels.update(tag)
    sleeper = _submit(bob, sleeper_spec)
    try:
        harness.engine.wait(beta, RPC_TIMEOUT)

        def ids(**fields: object) -> set[str]:
            request = pb.ListRequest(**fields)  # type: ignore[arg-type]
            request.labels.update(tag)
            return {job.id for job in _all_pages(alice, request)}

        assert ids() == {alpha1, alpha2, beta, sleeper}
        assert ids(name="alpha") == {alpha1, alpha2}
        assert ids(name="nosuchname") == set()
        assert ids(labels={"team": "a"}) == {alpha1, alpha2}
        assert ids(labels={"team": "a", "tier": "1"}) == {alpha1}  # every label must match
        assert ids(labels={"team": "c"}) == set()
        assert ids(states=[pb.JOB_STATE_RUNNING]) == {sleeper}
        assert ids(states=[pb.JOB_STATE_RUNNING, pb.JOB_STATE_ENDED]) == ids()
        assert ids(owner="bob") == {beta, sleeper}
        assert ids(owner="bob", states=[pb.JOB_STATE_ENDED]) == {beta}
        assert ids(created_after=between) == {beta, sleeper}
        assert ids(created_before=between) == {alpha1, alpha2}
        assert ids(ended_before=between) == {alpha1, alpha2}
        # A job still running has not ended at any time: no ended_* filter matches it.
        assert ids(ended_after=between) == {beta}
        assert ids(ended_after=0) == {alpha1, alpha2, beta}

        listed = {job.id: job for job in _all_pages(alice, pb.ListRequest(labels=tag))}
        assert listed[alpha1].spec.name == "alpha"
        assert dict(listed[alpha1].spec.labels) == {**team_a, "tier": "1"}
    finally:
        harness.engine.stop(sleeper, grace=0)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "w1.",
        "w1.!!!!",
        "w1.LTE",  # a negative sequence number
        "w1." + "A" * 100,
        "x" * 10_000,
        "w1.MDE",  # "01": not the canonical form a server writes
    ],
)
def test_a_bad_page_token_is_invalid_argument(harness: Harness, token: str) -> None:
    error = _error(
        lambda: harness.stub().List(pb.ListRequest(page_token=token), timeout=RPC_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == "page_token"
    assert error.details().startswith("page_token: ")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListRequest(created_after=-1), "created_after"),
        (pb.ListRequest(created_before=float("nan")), "created_before"),
        (pb.ListRequest(ended_after=float("inf")), "ended_after"),
        (pb.ListRequest(ended_before=-5), "ended_before"),
        (pb.ListRequest(states=[42]), "states[0]"),  # type: ignore[list-item]
        (pb.ListRequest(name="a\0b"), "name"),
    ],
)
def test_bad_filters_are_invalid_argument_naming_the_field(
    harness: Harness, request_: pb.ListRequest, field: str
) -> None:
    error = _error(lambda: harness.stub().List(request_, timeout=RPC_TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == field


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("Signal", pb.SignalRequest(job_id="0" * 32, signal=15)),
        ("Pause", pb.PauseRequest(job_id="0" * 32)),
        ("Resume", pb.ResumeRequest(job_id="0" * 32)),
        ("Release", pb.ReleaseRequest(job_id="0" * 32)),
    ],
)
def test_scheduling_calls_on_an_unknown_job_are_not_found(
    harness: Harness, method: str, request_: object
) -> None:
    error = _error(lambda: getattr(harness.stub(), method)(request_, timeout=RPC_TIMEOUT))
    assert error.code() == grpc.StatusCode.NOT_FOUND
