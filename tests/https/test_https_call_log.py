"""The HTTPS transport's ``worker.calls`` lines: one per API call, in the gRPC transport's
format and fields, so an operator reads one log for both (a real ``worker -v serve``, real
curl requests, the lines read from its stderr)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_certs import issue
from grpc_harness import WORKER, wait_for
from https_harness import HttpsServer, curl_stream, grpc_spec, https_serve, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

#: An id no job has (well formed: 32 lowercase hex digits).
ABSENT = "0" * 32

Record = dict[str, Any]


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    """``worker -v serve`` with both transports, its log in JSON lines."""
    with https_serve(
        tmp_path_factory.mktemp("calls-json"),
        worker=[*WORKER, "-v"],
        env={"WORKER_LOG_FORMAT": "json"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    """``worker -v serve`` with both transports, its log in text lines (the default)."""
    with https_serve(tmp_path_factory.mktemp("calls-text"), worker=[*WORKER, "-v"]) as running:
        yield running


def _records(server: HttpsServer, logger: str) -> list[Record]:
    """The JSON log records of ``logger`` on the server's stderr so far."""
    records = []
    for line in list(server.launched.stderr_lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("logger") == logger:
            records.append(record)
    return records


def _calls(server: HttpsServer) -> list[Record]:
    return _records(server, "worker.calls")


def _wait_call(server: HttpsServer, match: Callable[[Record], bool], what: str) -> Record:
    """The one call line ``match`` picks, once it is there (and it is only one)."""
    wait_for(lambda: any(match(r) for r in _calls(server)), timeout=20, what=what)
    found = [r for r in _calls(server) if match(r)]
    assert len(found) == 1, found
    return found[0]


def test_each_api_call_is_one_line_with_caller_route_code_and_duration(
    json_server: HttpsServer,
) -> None:
    server = json_server
    job = server.submit("alice", shell("echo hi"), waitSeconds=20)
    line = _wait_call(
        server,
        lambda r: r["method"] == "Submit" and r["job"] == job["id"],
        "the Submit line",
    )
    assert line["level"] == "INFO"
    assert line["principal"] == "alice"
    assert line["code"] == "OK"
    assert line["transport"] == "https"
    assert line["route"] == "POST /v1/jobs"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["message"] == (
        f"Submit principal=alice job={job['id']} code=OK duration_ms={line['duration_ms']:.1f}"
        ' transport=https route="POST /v1/jobs" status=201'
    )

    # A prefix in the path: the line names the job in full, as the answer does.
    assert server.call("alice", "GET", f"/v1/jobs/{job['id'][:10]}").status == 200
    get = _wait_call(
        server, lambda r: r["method"] == "Get" and r["job"] == job["id"], "the Get line"
    )
    assert (get["route"], get["status"], get["code"]) == ("GET /v1/jobs/{job_id}", 200, "OK")

    # Unknown (or unreadable: the same answer) is the id the path named, NOT_FOUND.
    assert server.call("alice", "GET", f"/v1/jobs/{ABSENT}").status == 404
    missing = _wait_call(
        server, lambda r: r["method"] == "Get" and r["job"] == ABSENT, "the NOT_FOUND line"
    )
    assert (missing["principal"], missing["code"], missing["status"]) == (
        "alice",
        "NOT_FOUND",
        404,
    )

    # A denial: the caller, the operation, the code.
    before = len(_calls(server))
    assert server.call("viewer", "POST", "/v1/jobs", {"spec": shell("true")}).status == 403
    denied = _wait_call(
        server,
        lambda r: r["principal"] == "viewer" and r["method"] == "Submit",
        "the denied Submit line",
    )
    assert (denied["code"], denied["status"], denied["job"]) == ("PERMISSION_DENIED", 403, None)
    assert len(_calls(server)) == before + 1  # one call, one line


def test_a_stream_is_one_line_when_it_ends_over_its_whole_life(json_server: HttpsServer) -> None:
    server = json_server
    done = server.submit("alice", shell("echo out"), waitSeconds=20)
    reply = server.curl("alice", f"/v1/jobs/{done['id'][:10]}/output")
    assert reply.status == 200 and reply.body == b"out\n"
    tail = _wait_call(
        server, lambda r: r["method"] == "Tail" and r["job"] == done["id"], "the Tail line"
    )
    assert (tail["code"], tail["status"], tail["route"]) == (
        "OK",
        200,
        "GET /v1/jobs/{job_id}/output",
    )

    # A follower that goes away: CANCELLED, no status answered, its whole life long.
    running = server.submit("alice", shell("echo first; exec sleep 60"))
    try:
        with curl_stream(server, "alice", f"/v1/jobs/{running['id']}/output?follow=true") as s:
            s.wait_for(lambda got: b"first\n" in got)
            held_from = time.monotonic()
            time.sleep(0.5)
            held = time.monotonic() - held_from
        cancelled = _wait_call(
            server,
            lambda r: r["method"] == "Tail" and r["job"] == running["id"],
            "the cancelled Tail line",
        )
        assert (cancelled["code"], cancelled["status"]) == ("CANCELLED", None)
        assert cancelled["message"].endswith(" status=-")
        assert cancelled["duration_ms"] >= held * 1000
    finally:
        server.call("admin", "POST", f"/v1/jobs/{running['id']}/stop", {"force": True})


def test_refused_callers_have_a_line_and_the_console_has_none(json_server: HttpsServer) -> None:
    server = json_server
    server.cert("calls-no-eku", issue(server.pki.ca, "calls-no-eku", usages=()))
    before = len(_calls(server))
    reply = server.curl("calls-no-eku", "/v1/me")
    assert reply.status == 401
    refused = _wait_call(
        server,
        lambda r: r["method"] == "WhoAmI" and r["code"] == "UNAUTHENTICATED",
        "the UNAUTHENTICATED line",
    )
    assert (refused["principal"], refused["status"]) == (None, 401)
    assert "principal=- " in refused["message"]
    # The console's page and files, and a route that does not exist, are not calls.
    assert server.curl("alice", "/").status == 200
    assert server.curl("alice", "/v1/no-such-route").status == 404
    assert server.curl("alice", "/v1/me").status == 200
    me = _wait_call(
        server, lambda r: r["method"] == "WhoAmI" and r["principal"] == "alice", "the me line"
    )
    assert me["code"] == "OK"
    assert [r["method"] for r in _calls(server)[before:]] == ["WhoAmI", "WhoAmI"]


TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def test_both_transports_write_one_log_an_operator_greps_once(text_server: HttpsServer) -> None:
    server = text_server
    job = (
        server.stub("alice")
        .Submit(pb.SubmitRequest(spec=grpc_spec("exit 0"), wait_seconds=20), timeout=30)
        .job
    )
    assert server.call("alice", "GET", f"/v1/jobs/{job.id}").status == 200

    def lines() -> list[str]:
        return [x for x in server.stderr.splitlines() if "worker.calls" in x and job.id in x]

    wait_for(lambda: len(lines()) == 2, timeout=20, what="both transports' lines")
    grpc_line, https_line = lines()
    assert re.fullmatch(
        rf"{TIME} INFO worker\.calls: Submit principal=alice job={job.id} code=OK "
        r"duration_ms=\d+\.\d",
        grpc_line,
    ), grpc_line
    assert re.fullmatch(
        rf"{TIME} INFO worker\.calls: Get principal=alice job={job.id} code=OK "
        r'duration_ms=\d+\.\d transport=https route="GET /v1/jobs/\{job_id\}" status=200',
        https_line,
    ), https_line


def test_a_hostile_id_in_the_path_stays_on_its_line(text_server: HttpsServer) -> None:
    server = text_server
    assert server.call("alice", "GET", "/v1/jobs/evil%0AINFO%20worker.calls:%20forged").status
    wait_for(lambda: "evil" in server.stderr, timeout=20, what="the line of the hostile request")
    [line] = [x for x in server.stderr.splitlines() if "evil" in x]
    assert "job=evil\\nINFO worker.calls: forged code=" in line
    assert not any(x.startswith("INFO worker.calls: forged") for x in server.stderr.splitlines())


def test_without_verbose_there_are_no_call_lines(tmp_path: Path) -> None:
    with https_serve(tmp_path / "quiet") as server:
        assert server.submit("alice", shell("true"), waitSeconds=20)["exitCode"] == 0
        assert server.curl("alice", "/v1/me").status == 200
    assert "worker.calls" not in server.stderr  # read once the server has ended


def _denials(server: HttpsServer) -> list[Record]:
    return _records(server, "worker.authz")


def test_a_denied_call_has_its_worker_authz_line_as_over_grpc(json_server: HttpsServer) -> None:
    server = json_server
    job_id = server.submit("alice", shell("sleep 30"))["id"]
    try:
        assert server.call("viewer", "POST", "/v1/jobs", {"spec": shell("true")}).status == 403
        assert server.call("viewer", "POST", f"/v1/jobs/{job_id}/stop").status == 403
        wait_for(lambda: len(_denials(server)) >= 2, timeout=20, what="the two denial lines")
        submit, stop = [r for r in _denials(server) if r["principal"] == "viewer"][-2:]
        assert (submit["level"], submit["action"], submit["method"]) == (
            "WARNING",
            "submit",
            "Submit",
        )
        assert submit["job"] is None and submit["transport"] == "https"
        assert "may not submit" in submit["reason"]
        assert (stop["action"], stop["method"], stop["job"]) == ("stop", "Stop", job_id)
        assert "transport=https" in stop["message"]
    finally:
        assert server.call("alice", "POST", f"/v1/jobs/{job_id}/stop").status == 200
