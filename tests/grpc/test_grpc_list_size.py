"""A List response is bounded by construction: huge records come in several pages, never in
one message over the 64 MiB cap (before pages, 80 jobs of ~1 MB of arguments made List fail
for every reader)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from grpc_harness import RPC_TIMEOUT, Harness, running_server

from worker_core._config import Config, EngineSettings
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.servicer import LIST_PAGE_BYTES

#: Ten arguments of 100 kB: about 1 MB a job (one argument may not exceed 128 KiB for exec).
BIG_ARGS = ["x" * 100_000 for _ in range(10)]
JOBS = 80


def store_setup(store: str, directory: Path) -> tuple[list[str], Config]:
    if store == "memory":
        return [], Config()
    return [store], Config(engine=EngineSettings(state_dir=str(directory / "state")))


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp(f"list-size-{request.param}")
    plugins, config = store_setup(request.param, directory)
    with running_server(directory / "pki", plugins=plugins, config=config) as h:
        yield h


@pytest.fixture(scope="module")
def big_jobs(harness: Harness) -> list[str]:
    stub = harness.stub()

    def submit(i: int) -> str:
        job_spec = pb.JobSpec(command="/bin/true", args=BIG_ARGS, name=f"big-{i}")
        return stub.Submit(pb.SubmitRequest(spec=job_spec), timeout=RPC_TIMEOUT).job.id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(submit, range(JOBS)))
    for job_id in ids:
        harness.engine.wait(job_id, RPC_TIMEOUT)
    return ids


@pytest.mark.parametrize("page_size", [0, 1000])
@pytest.mark.parametrize("reader", ["alice", "bob"])
def test_huge_records_come_in_pages_that_fit(
    harness: Harness, big_jobs: list[str], page_size: int, reader: str
) -> None:
    stub = harness.stub(reader)
    sizes: list[int] = []
    ids: list[str] = []
    token = ""
    while True:
        response = stub.List(
            pb.ListRequest(page_size=page_size, page_token=token), timeout=RPC_TIMEOUT
        )
        sizes.append(response.ByteSize())
        ids.extend(job.id for job in response.jobs)
        for job in response.jobs:  # the records are whole, not cut short
            assert list(job.spec.args) == BIG_ARGS
        token = response.next_page_token
        if not token:
            break
        assert len(sizes) <= JOBS, "pages never end"
    assert sorted(ids) == sorted(big_jobs)
    # Within the budget (plus the page token's few bytes), far under the 64 MiB cap.
    assert max(sizes) <= LIST_PAGE_BYTES + 100
    assert len(sizes) > JOBS * len(BIG_ARGS) * 100_000 // LIST_PAGE_BYTES


def test_one_huge_record_per_page_still_makes_progress(
    harness: Harness, big_jobs: list[str]
) -> None:
    # page_size 1: the byte budget never cuts a page to nothing.
    stub = harness.stub()
    first = stub.List(pb.ListRequest(page_size=1), timeout=RPC_TIMEOUT)
    second = stub.List(
        pb.ListRequest(page_size=1, page_token=first.next_page_token), timeout=RPC_TIMEOUT
    )
    assert len(first.jobs) == len(second.jobs) == 1
    assert first.jobs[0].id != second.jobs[0].id
    assert {first.jobs[0].id, second.jobs[0].id} <= set(big_jobs)
