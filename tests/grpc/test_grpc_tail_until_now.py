"""Tail with until_now (`worker job tail` without -f): exactly what exists when asked, then end."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, Harness, collect, shell, wait_for

from worker_core import Stream
from worker_plugins.grpc_transport import worker_pb2 as pb


def submit(harness: Harness, script: str) -> str:
    request = pb.SubmitRequest(spec=shell(script))
    return harness.stub().Submit(request, timeout=RPC_TIMEOUT).job.id


def test_a_running_job_gives_what_it_wrote_so_far_and_the_call_ends(
    harness: Harness, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    job_id = submit(
        harness, f"echo one; echo err >&2; while [ ! -e {go} ]; do sleep 0.02; done; echo two"
    )
    wait_for(lambda: harness.engine.output_size(job_id)[Stream.STDERR] == 4, what="output")
    # The job waits for `go`, touched only after the call: a Tail that waited for the job
    # would end by its deadline (DEADLINE_EXCEEDED), never with this output.
    got = collect(
        harness.stub().Tail(pb.TailRequest(job_id=job_id, until_now=True), timeout=RPC_TIMEOUT)
    )
    assert got == {pb.STREAM_STDOUT: b"one\n", pb.STREAM_STDERR: b"err\n"}
    assert not harness.engine.get(job_id).is_finished, "until_now must not wait for the job"
    go.touch()
    harness.engine.wait(job_id, 10)


def test_a_busy_writer_is_cut_at_the_size_when_the_call_arrived(harness: Harness) -> None:
    job_id = submit(
        harness, "i=0; while [ $i -lt 200000 ]; do echo line $i; i=$((i+1)); done; sleep 30"
    )
    wait_for(lambda: sum(harness.engine.output_size(job_id).values()) > 10_000, what="output")
    got = collect(
        harness.stub().Tail(
            pb.TailRequest(job_id=job_id, stream=pb.STREAM_STDOUT, until_now=True),
            timeout=RPC_TIMEOUT,
        )
    )
    text = got[pb.STREAM_STDOUT].decode()
    assert text.startswith("line 0\n") and len(text) > 10_000
    assert len(text) <= harness.engine.output_size(job_id)[Stream.STDOUT]
    harness.engine.stop(job_id, grace=0)


@pytest.mark.parametrize("start", ["from_end", "past_the_end", "nothing_written"])
def test_nothing_to_send_ends_at_once(harness: Harness, tmp_path: Path, start: str) -> None:
    go = tmp_path / "go"
    script = "" if start == "nothing_written" else "echo some;"
    job_id = submit(harness, f"{script} while [ ! -e {go} ]; do sleep 0.02; done")
    if start != "nothing_written":
        wait_for(lambda: harness.engine.output(job_id) == b"some\n", what="output")
    request = pb.TailRequest(job_id=job_id, until_now=True)
    if start == "from_end":
        request.from_end = True
    elif start == "past_the_end":
        request.from_offsets.stdout = 5
        request.from_offsets.stderr = 0
    # As above: ending OK while the job still waits for `go` is ending at once.
    call = harness.stub().Tail(request, timeout=RPC_TIMEOUT)
    assert collect(call) == {}
    assert call.code() == grpc.StatusCode.OK
    assert not harness.engine.get(job_id).is_finished
    go.touch()
    harness.engine.wait(job_id, 10)
