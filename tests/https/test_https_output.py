"""A job's output and status over HTTPS with curl: raw bytes exactly as written, from any
start, following live; Server-Sent Events that resume exactly from Last-Event-ID."""

from __future__ import annotations

import json
import sys

from grpc_harness import collect
from https_harness import HttpsServer, curl_stream, parse_events, shell, sse_output

from worker_plugins.grpc_transport import worker_pb2 as pb

SSE = "Accept: text/event-stream"

#: Every byte value, many times over, and an odd tail: 1 MiB + 77 bytes on stdout, and a
#: different pattern on stderr.
STDOUT = bytes(range(256)) * 4096 + bytes(range(77))
STDERR = bytes(reversed(range(256))) * 300
WRITER = (
    "import sys\n"
    "sys.stdout.buffer.write(bytes(range(256)) * 4096 + bytes(range(77)))\n"
    "sys.stdout.flush()\n"
    "sys.stderr.buffer.write(bytes(reversed(range(256))) * 300)\n"
)


def _python(code: str) -> dict[str, object]:
    return {"command": sys.executable, "args": ["-c", code]}


def test_raw_output_is_byte_exact(server: HttpsServer) -> None:
    job = server.submit("alice", _python(WRITER), waitSeconds=30)
    assert job["exitCode"] == 0
    out = server.curl("alice", f"/v1/jobs/{job['id']}/output?stream=stdout")
    assert out.status == 200
    assert out.headers["content-type"] == "application/octet-stream"
    assert out.body == STDOUT
    assert server.curl("alice", f"/v1/jobs/{job['id']}/output?stream=stderr").body == STDERR
    both = server.curl("alice", f"/v1/jobs/{job['id']}/output").body
    # Both streams in order of arrival: stdout was flushed before stderr was written.
    assert both == STDOUT + STDERR
    # The same bytes as gRPC's Tail.
    tail = collect(server.stub("alice").Tail(pb.TailRequest(job_id=job["id"]), timeout=30))
    assert tail[pb.STREAM_STDOUT] == STDOUT and tail[pb.STREAM_STDERR] == STDERR


def test_output_from_an_offset_or_the_end(server: HttpsServer) -> None:
    job = server.submit("alice", _python(WRITER), waitSeconds=30)
    path = f"/v1/jobs/{job['id']}/output"
    part = server.curl("alice", f"{path}?stream=stdout&start=1000000")
    assert part.body == STDOUT[1000000:]
    assert part.headers["x-worker-start"] == "1000000"
    both = server.curl("alice", f"{path}?start=1048000,700")
    assert both.body == STDOUT[1048000:] + STDERR[700:]
    assert both.headers["x-worker-start"] == "1048000,700"
    end = server.curl("alice", f"{path}?start=end")
    assert end.body == b""
    assert end.headers["x-worker-start"] == f"{len(STDOUT)},{len(STDERR)}"
    past = server.curl("alice", f"{path}?stream=stderr&start={len(STDERR) + 10}")
    assert past.status == 200 and past.body == b""


def test_follow_streams_live_until_the_job_ends(server: HttpsServer) -> None:
    script = "echo first; read line < /dev/null; sleep 1; for i in 1 2 3; do echo line $i; sleep 0.2; done"
    job = server.submit("alice", shell(script))
    with curl_stream(server, "alice", f"/v1/jobs/{job['id']}/output?follow=true") as stream:
        stream.wait_for(lambda got: b"first\n" in got)
        # The first line arrived while the job still runs: it is live, not gathered first.
        assert server.job("alice", job["id"])["state"] == "JOB_STATE_RUNNING"
        assert stream.finish() == b"first\nline 1\nline 2\nline 3\n"
    assert server.job("alice", job["id"])["state"] == "JOB_STATE_ENDED"


def test_without_follow_the_output_ends_at_what_was_written(server: HttpsServer) -> None:
    job = server.submit("alice", shell("echo ready; sleep 60"))
    with curl_stream(server, "alice", f"/v1/jobs/{job['id']}/output?follow=true") as live:
        live.wait_for(lambda got: got == b"ready\n")
    reply = server.curl("alice", f"/v1/jobs/{job['id']}/output")
    assert reply.body == b"ready\n"
    assert server.job("alice", job["id"])["state"] == "JOB_STATE_RUNNING"
    server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"force": True})


def test_sse_events_carry_the_bytes_and_resume_from_last_event_id(server: HttpsServer) -> None:
    job = server.submit("alice", _python(WRITER), waitSeconds=30)
    path = f"/v1/jobs/{job['id']}/output"
    full = server.curl("alice", path, headers=[SSE])
    assert full.headers["content-type"] == "text/event-stream"
    events = parse_events(full.body.decode())
    assert events[-1]["event"] == "end"
    assert json.loads(events[-1]["data"])["state"] == "JOB_STATE_ENDED"
    assert sse_output(events) == {"STREAM_STDOUT": STDOUT, "STREAM_STDERR": STDERR}
    outputs = [e for e in events if e["event"] == "output"]
    assert len(outputs) > 10  # 64 KiB per event
    # Resume after any event: exactly the rest, nothing repeated, nothing lost.
    for k in (0, 7, len(outputs) - 2, len(outputs) - 1):
        resumed = server.curl("alice", path, headers=[SSE, f"Last-Event-ID: {outputs[k]['id']}"])
        rest = parse_events(resumed.body.decode())
        assert rest[-1]["event"] == "end"
        assert [e for e in rest if e["event"] == "output"] == outputs[k + 1 :]
    # One stream: the id is that stream's offset alone.
    single = parse_events(
        server.curl("alice", f"{path}?stream=stderr", headers=[SSE]).body.decode()
    )
    ids = [e["id"] for e in single if e["event"] == "output"]
    assert ids[-1] == str(len(STDERR))
    resumed = server.curl("alice", f"{path}?stream=stderr", headers=[SSE, "Last-Event-ID: 1000"])
    resumed_events = parse_events(resumed.body.decode())
    assert sse_output(resumed_events, start=1000)["STREAM_STDERR"] == STDERR[1000:]


def test_a_broken_live_event_stream_resumes_where_it_broke_off(server: HttpsServer) -> None:
    script = (
        "i=0; while [ $i -lt 40 ]; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.05; done"
    )
    job = server.submit("alice", shell(script))
    path = f"/v1/jobs/{job['id']}/output?follow=true"
    with curl_stream(server, "alice", path, headers=[SSE]) as first:
        got = first.wait_for(lambda got: got.count(b"event: output") >= 6)
    # The client went away mid-stream; it resumes from the last complete event it saw.
    seen = parse_events(got.decode().rsplit("\n\n", 1)[0] + "\n\n")
    last = [e for e in seen if e.get("event") == "output"][-1]["id"]
    with curl_stream(server, "alice", path, headers=[SSE, f"Last-Event-ID: {last}"]) as second:
        rest = parse_events(second.finish().decode())
    assert rest[-1]["event"] == "end"
    joined = sse_output([*seen, *rest])
    assert joined["STREAM_STDOUT"] == b"".join(b"out %d\n" % i for i in range(40))
    assert joined["STREAM_STDERR"] == b"".join(b"err %d\n" % i for i in range(40))


def test_status_events_follow_the_job_until_it_ends(server: HttpsServer) -> None:
    job = server.submit("alice", shell("sleep 0.5"))
    with curl_stream(server, "alice", f"/v1/jobs/{job['id']}/events", headers=[SSE]) as stream:
        events = parse_events(stream.finish().decode())
    assert events[-1]["event"] == "end"
    states = [json.loads(e["data"])["state"] for e in events if e["event"] == "job"]
    assert states[-1] == "JOB_STATE_ENDED"
    assert "JOB_STATE_RUNNING" in states or len(states) == 1
    # Without SSE: one Job per line, the last one ended.
    lines = server.curl("alice", f"/v1/jobs/{job['id']}/events").body.splitlines()
    assert json.loads(lines[-1])["state"] == "JOB_STATE_ENDED"
    assert json.loads(lines[-1])["id"] == job["id"]


def test_bad_output_requests_name_the_parameter(server: HttpsServer) -> None:
    job = server.submit("alice", {"command": "/bin/true"}, waitSeconds=20)
    path = f"/v1/jobs/{job['id']}/output"
    cases = [
        ("?stream=stdin", [], "stream"),
        ("?start=soon", [], "start"),
        ("?start=5", [], "start"),  # both streams need OUT,ERR
        ("?stream=stdout&start=1,2", [], "start"),
        ("?start=-1,0", [], "start"),
        ("?follow=perhaps", [], "follow"),
        ("?from=0", [], "from"),
        ("", [SSE, "Last-Event-ID: junk"], "Last-Event-ID"),
    ]
    for query, headers, field in cases:
        reply = server.curl("alice", path + query, headers=headers)
        assert reply.status == 400, (query, reply)
        assert reply.json()["field"] == field, (query, reply.json())
