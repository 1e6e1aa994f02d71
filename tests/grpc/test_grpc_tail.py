"""Following output over the wire: replay, live, many followers, disconnects, resume, the cap."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, collect, running_server, shell, wait_for

from worker_core import Stream
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.config import GrpcConfig

MiB = 1 << 20


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_server(
        tmp_path_factory.mktemp("pki"), grpc_config=GrpcConfig(max_streams_per_client=32)
    ) as h:
        yield h


def _submit(harness: Harness, script: str, cn: str = "alice") -> str:
    return harness.stub(cn).Submit(pb.SubmitRequest(spec=shell(script)), timeout=RPC_TIMEOUT).job.id


def test_replay_then_live_until_the_job_ends(harness: Harness, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = _submit(
        harness,
        f"echo one; echo err1 >&2; while [ ! -e {go} ]; do sleep 0.02; done; echo two; echo err2 >&2",
    )
    wait_for(lambda: harness.engine.output(job_id) == b"one\n", what="first output")
    call = harness.stub().Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)
    first = next(call)  # replayed: written before the follower attached
    assert (first.stream, first.offset) in {(pb.STREAM_STDOUT, 0), (pb.STREAM_STDERR, 0)}
    go.touch()  # now the live part
    got = collect([first, *call])  # ends by itself once the job has ended
    assert got == {pb.STREAM_STDOUT: b"one\ntwo\n", pb.STREAM_STDERR: b"err1\nerr2\n"}
    assert call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (pb.STREAM_STDOUT, {pb.STREAM_STDOUT: b"out\n"}),
        (pb.STREAM_STDERR, {pb.STREAM_STDERR: b"err\n"}),
    ],
)
def test_one_stream(harness: Harness, stream: int, expected: dict[int, bytes]) -> None:
    job_id = _submit(harness, "echo out; echo err >&2")
    tail = harness.stub().Tail(pb.TailRequest(job_id=job_id, stream=stream), timeout=RPC_TIMEOUT)  # type: ignore[arg-type]
    assert collect(tail) == expected


def test_from_end_is_live_only(harness: Harness, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = _submit(harness, f"echo early; while [ ! -e {go} ]; do sleep 0.02; done; echo late")
    wait_for(lambda: harness.engine.output(job_id) == b"early\n", what="early output")
    call = harness.stub("live").Tail(
        pb.TailRequest(job_id=job_id, from_end=True), timeout=RPC_TIMEOUT
    )
    result: list[list[tuple[int, int, bytes]]] = []
    reader = threading.Thread(
        target=lambda: result.append([(m.stream, m.offset, m.data) for m in call])
    )
    reader.start()
    # The follower exists once the server counts the stream open.
    wait_for(lambda: harness.server.guard.open_streams("live") == 1, what="the stream to open")
    time.sleep(0.2)
    go.touch()
    reader.join(RPC_TIMEOUT)
    assert result == [[(pb.STREAM_STDOUT, len(b"early\n"), b"late\n")]]


def test_resume_from_offsets(harness: Harness) -> None:
    job_id = _submit(harness, "for i in $(seq 1 2000); do echo line $i; echo e$i >&2; done")
    harness.engine.wait(job_id, timeout=RPC_TIMEOUT)
    full = collect(harness.stub().Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT))
    # Resume the way a client does after a disconnect: the end of what it had per stream.
    out_at, err_at = 1234, 567
    messages = list(
        harness.stub().Tail(
            pb.TailRequest(job_id=job_id, from_offsets=pb.Offsets(stdout=out_at, stderr=err_at)),
            timeout=RPC_TIMEOUT,
        )
    )
    resumed = {pb.STREAM_STDOUT: bytearray(), pb.STREAM_STDERR: bytearray()}
    starts = {pb.STREAM_STDOUT: out_at, pb.STREAM_STDERR: err_at}
    for m in messages:
        assert m.offset == starts[m.stream] + len(resumed[m.stream])
        resumed[m.stream] += m.data
    assert bytes(resumed[pb.STREAM_STDOUT]) == full[pb.STREAM_STDOUT][out_at:]
    assert bytes(resumed[pb.STREAM_STDERR]) == full[pb.STREAM_STDERR][err_at:]


def test_many_followers_and_one_that_disconnects(harness: Harness) -> None:
    # ~4 MiB over a couple of seconds, so the followers overlap with the live part.
    job_id = _submit(
        harness,
        "i=0; while [ $i -lt 40 ]; do head -c 100000 /dev/zero | tr '\\0' x; i=$((i+1)); "
        "sleep 0.02; done",
        cn="fan",
    )
    quitter = harness.stub("quitter").Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)
    next(quitter)
    quitter.cancel()  # gone mid-stream: the job and the others carry on
    with ThreadPoolExecutor(20) as pool:
        digests = list(
            pool.map(
                lambda _: hashlib.sha256(
                    collect(
                        harness.stub("fan").Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)
                    )[pb.STREAM_STDOUT]
                ).hexdigest(),
                range(20),
            )
        )
    expected = hashlib.sha256(b"x" * 4_000_000).hexdigest()
    assert digests == [expected] * 20
    job = harness.engine.wait(job_id, timeout=RPC_TIMEOUT)
    assert job.exit_code == 0
    wait_for(lambda: harness.server.guard.open_streams("quitter") == 0, what="stream released")
    wait_for(lambda: harness.server.guard.open_streams("fan") == 0, what="streams released")


def test_adjacent_chunks_are_merged_into_large_messages(harness: Harness) -> None:
    # Many small writes, then one large burst.
    job_id = _submit(harness, "for i in $(seq 1 5000); do echo $i; done; head -c 5000000 /dev/zero")
    harness.engine.wait(job_id, timeout=RPC_TIMEOUT)
    messages = list(harness.stub().Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT))
    total = sum(len(m.data) for m in messages)
    assert total == len(harness.engine.output(job_id, Stream.STDOUT))
    assert max(len(m.data) for m in messages) <= MiB
    # 5000 writes of the loop alone would be 5000 messages without merging.
    assert len(messages) <= total // MiB + 10


def test_watch_sends_records_until_ended(harness: Harness) -> None:
    job_id = _submit(harness, "sleep 0.2")
    records = list(harness.stub().Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT))
    assert records[-1].state == pb.JOB_STATE_ENDED
    assert records[-1].exit_code == 0
    assert [r.state for r in records] == sorted(r.state for r in records)


def test_stream_cap_per_client(tmp_path: Path) -> None:
    with running_server(tmp_path, grpc_config=GrpcConfig(max_streams_per_client=3)) as h:
        alice = h.stub("alice")
        job_id = alice.Submit(pb.SubmitRequest(spec=shell("sleep 30")), timeout=RPC_TIMEOUT).job.id
        calls = [alice.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT) for _ in range(2)]
        calls.append(alice.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT))
        next(calls[-1])  # Watch sends the current record at once
        wait_for(lambda: h.server.guard.open_streams("alice") == 3, what="three open streams")
        with pytest.raises(grpc.RpcError) as info:
            next(alice.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Unary calls and other clients are not affected.
        assert alice.Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT).job.id == job_id
        bob_watch = h.stub("bob").Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT)
        assert next(bob_watch).id == job_id
        bob_watch.cancel()
        # A closed stream frees its slot.
        calls.pop().cancel()
        wait_for(lambda: h.server.guard.open_streams("alice") == 2, what="a slot freed")
        again = alice.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT)
        assert next(again).id == job_id
        stopped = alice.Stop(pb.StopRequest(job_id=job_id, force=True), timeout=RPC_TIMEOUT).job
        assert stopped.state == pb.JOB_STATE_ENDED
        for call in [*calls, again]:
            list(call)  # every stream ends with the job
