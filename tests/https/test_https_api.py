"""Every route of the JSON API with curl: what each answers, and the errors, as status codes
with ``{"code", "message", "field"}`` bodies."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from https_harness import HttpsServer, https_serve, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

TRUE = {"command": "/bin/true"}
SLEEP = shell("sleep 60")


def _label() -> str:
    return uuid.uuid4().hex[:12]


def test_submit_answers_201_with_the_record_and_its_location(server: HttpsServer) -> None:
    tag = _label()
    reply = server.call(
        "alice",
        "POST",
        "/v1/jobs",
        {
            "spec": shell("echo hi", name="greeting", labels={"tag": tag}),
            "waitSeconds": 20,
        },
    )
    assert reply.status == 201
    job = reply.json()["job"]
    assert reply.headers["location"] == f"/v1/jobs/{job['id']}"
    assert reply.headers["content-type"].startswith("application/json")
    assert job["owner"] == "alice"
    assert job["state"] == "JOB_STATE_ENDED"
    assert job["exitCode"] == 0
    assert job["endReason"] == "END_REASON_EXITED"
    assert job["spec"]["name"] == "greeting"
    assert job["spec"]["labels"] == {"tag": tag}
    # The proto's JSON mapping: fields without presence are written even when empty.
    assert job["spec"]["env"] == {} and job["idempotencyKey"] == ""


def test_snake_case_field_names_are_accepted_too(server: HttpsServer) -> None:
    reply = server.call(
        "alice", "POST", "/v1/jobs", {"spec": TRUE, "wait_seconds": 20, "idempotency_key": _label()}
    )
    assert reply.status == 201
    assert reply.json()["job"]["state"] == "JOB_STATE_ENDED"


def test_an_idempotency_key_returns_the_first_job(server: HttpsServer) -> None:
    key = _label()
    first = server.submit("alice", TRUE, idempotencyKey=key)
    again = server.submit("alice", TRUE, idempotencyKey=key)
    assert again["id"] == first["id"]


def test_get_by_id_and_by_unique_prefix(server: HttpsServer) -> None:
    job = server.submit("alice", TRUE, waitSeconds=20)
    for given in (job["id"], job["id"][:10]):
        reply = server.call("alice", "GET", f"/v1/jobs/{given}")
        assert reply.status == 200
        assert reply.json()["job"]["id"] == job["id"]


def test_get_of_a_running_job_says_what_it_uses_now_like_grpc(tmp_path: Path) -> None:
    # With cgroups, a running job's Get carries "usage"; both transports answer the same.
    parent = f"worker-test-https-{uuid.uuid4().hex[:8]}"
    sections = {"plugins.cgroups": {"parent": parent}}
    with https_serve(tmp_path, plugins="https,rbac,cgroups", sections=sections) as confined:
        job = confined.submit("alice", shell("sleep 30"))
        try:
            record = confined.call("alice", "GET", f"/v1/jobs/{job['id']}").json()["job"]
            assert record["state"] == "JOB_STATE_RUNNING"
            over_grpc = confined.stub("alice").Get(pb.GetRequest(job_id=job["id"]), timeout=30)
            assert set(record["usage"]) == set(over_grpc.job.usage) != set()
        finally:
            confined.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"graceSeconds": 0})
        ended = confined.call("alice", "GET", f"/v1/jobs/{job['id']}").json()["job"]
        assert "usage" not in ended, "an ended job has its facts, not a usage now"


def test_list_filters_and_pages_like_grpc(server: HttpsServer) -> None:
    tag = _label()
    ids = [
        server.submit("alice", shell("true", name=f"n{i}", labels={"tag": tag}), waitSeconds=20)[
            "id"
        ]
        for i in range(5)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        path = f"/v1/jobs?label=tag={tag}&page_size=2" + (f"&page_token={token}" if token else "")
        reply = server.call("alice", "GET", path)
        assert reply.status == 200, reply
        data = reply.json()
        seen += [job["id"] for job in data["jobs"]]
        pages += 1
        token = data["nextPageToken"]
        if not token:
            break
    assert seen == list(reversed(ids))  # newest first, none skipped or repeated
    assert pages == 3
    # The same query over gRPC pages the same way.
    grpc_ids: list[str] = []
    token = ""
    while True:
        response = server.stub("alice").List(
            pb.ListRequest(labels={"tag": tag}, page_size=2, page_token=token), timeout=20
        )
        grpc_ids += [job.id for job in response.jobs]
        token = response.next_page_token
        if not token:
            break
    assert grpc_ids == seen
    # Filters: name, state (repeatable, short or full names), owner.
    by_name = server.call("alice", "GET", f"/v1/jobs?label=tag={tag}&name=n3").json()["jobs"]
    assert [job["id"] for job in by_name] == [ids[3]]
    ended = server.call(
        "alice", "GET", f"/v1/jobs?label=tag={tag}&state=ended&state=JOB_STATE_RUNNING"
    ).json()["jobs"]
    assert len(ended) == 5
    running = server.call("alice", "GET", f"/v1/jobs?label=tag={tag}&state=running").json()
    assert running["jobs"] == []
    other_owner = server.call("admin", "GET", f"/v1/jobs?label=tag={tag}&owner=bob").json()
    assert other_owner["jobs"] == []
    created_after = server.call(
        "alice", "GET", f"/v1/jobs?label=tag={tag}&created_after={time.time() + 60}"
    ).json()
    assert created_after["jobs"] == []


def test_stop_answers_with_the_final_record(server: HttpsServer) -> None:
    job = server.submit("alice", SLEEP)
    reply = server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"graceSeconds": 1})
    assert reply.status == 200
    stopped = reply.json()["job"]
    assert stopped["state"] == "JOB_STATE_ENDED"
    assert stopped["endReason"] == "END_REASON_STOPPED"
    # Stopping a finished job returns its final status.
    again = server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop")
    assert again.status == 200 and again.json()["job"]["endReason"] == "END_REASON_STOPPED"


def test_signal_reaches_the_job(server: HttpsServer) -> None:
    script = "trap 'echo got USR1; exit 3' USR1; echo ready; while :; do sleep 0.1; done"
    job = server.submit("alice", shell(script))
    server.wait_state(job["id"], "JOB_STATE_RUNNING")
    wait_output(server, job["id"], b"ready")
    reply = server.call("alice", "POST", f"/v1/jobs/{job['id']}/signal", {"signal": 10})
    assert reply.status == 200
    ended = server.wait_state(job["id"], "JOB_STATE_ENDED")
    assert ended["exitCode"] == 3
    # Every process of the job got it (the shell reports its `sleep` child killed on stderr).
    stdout = server.curl("alice", f"/v1/jobs/{job['id']}/output?stream=stdout").body
    assert stdout == b"ready\ngot USR1\n"
    bad = server.call("alice", "POST", f"/v1/jobs/{job['id']}/signal", {"signal": 10})
    assert bad.status == 409 and bad.code == "FAILED_PRECONDITION"


def wait_output(server: HttpsServer, job_id: str, expected: bytes) -> None:
    from grpc_harness import wait_for

    wait_for(
        lambda: expected in server.curl("admin", f"/v1/jobs/{job_id}/output").body,
        20,
        what=f"{expected!r} in the output of {job_id}",
    )


def test_pause_and_resume(server: HttpsServer) -> None:
    job = server.submit("alice", SLEEP)
    server.wait_state(job["id"], "JOB_STATE_RUNNING")
    paused = server.call("alice", "POST", f"/v1/jobs/{job['id']}/pause")
    assert paused.status == 200
    assert paused.json()["job"]["state"] == "JOB_STATE_PAUSED"
    twice = server.call("alice", "POST", f"/v1/jobs/{job['id']}/pause")
    assert twice.status == 409 and twice.code == "FAILED_PRECONDITION"
    resumed = server.call("alice", "POST", f"/v1/jobs/{job['id']}/resume")
    assert resumed.status == 200
    assert resumed.json()["job"]["state"] == "JOB_STATE_RUNNING"
    server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"force": True})


def test_release_lets_a_held_job_run(server: HttpsServer) -> None:
    job = server.submit("alice", {**TRUE, "hold": True})
    assert job["state"] == "JOB_STATE_HELD"
    reply = server.call("alice", "POST", f"/v1/jobs/{job['id']}/release")
    assert reply.status == 200
    assert reply.json()["job"]["state"] != "JOB_STATE_HELD"
    assert server.wait_state(job["id"], "JOB_STATE_ENDED")["exitCode"] == 0
    again = server.call("alice", "POST", f"/v1/jobs/{job['id']}/release")
    assert again.status == 409


def test_delete_purges_a_finished_job(server: HttpsServer) -> None:
    running = server.submit("alice", SLEEP)
    refused = server.call("alice", "DELETE", f"/v1/jobs/{running['id']}")
    assert refused.status == 409 and refused.code == "FAILED_PRECONDITION"
    server.call("alice", "POST", f"/v1/jobs/{running['id']}/stop", {"force": True})
    reply = server.call("alice", "DELETE", f"/v1/jobs/{running['id']}")
    assert reply.status == 200
    assert reply.json() == {"jobIds": [running["id"]]}
    gone = server.call("alice", "GET", f"/v1/jobs/{running['id']}")
    assert gone.status == 404


def test_purge_by_ids_and_by_filter(server: HttpsServer) -> None:
    first = server.submit("alice", TRUE, waitSeconds=20)
    second = server.submit("alice", TRUE, waitSeconds=20)
    reply = server.call("alice", "POST", "/v1/purge", {"jobIds": [first["id"]]})
    assert reply.status == 200 and reply.json()["jobIds"] == [first["id"]]
    reply = server.call(
        "alice", "POST", "/v1/purge", {"owner": "alice", "endedBefore": time.time() + 1}
    )
    assert reply.status == 200 and second["id"] in reply.json()["jobIds"]
    assert server.call("alice", "GET", f"/v1/jobs/{second['id']}").status == 404
    neither = server.call("alice", "POST", "/v1/purge", {})
    assert neither.status == 400 and neither.json()["field"] == "job_ids"


def test_me_names_the_certificate(server: HttpsServer) -> None:
    for cn in ("alice", "viewer"):
        assert server.call(cn, "GET", "/v1/me").json() == {"name": cn}


# --- errors -----------------------------------------------------------------------------------


def _error(reply: object, status: int, code: str, field: str | None = None) -> None:
    assert reply.status == status, reply  # type: ignore[attr-defined]
    body = reply.json()  # type: ignore[attr-defined]
    assert set(body) == {"code", "message", "field"}
    assert body["code"] == code and body["field"] == field, body
    assert body["message"]


def test_malformed_requests_are_400_naming_the_field(server: HttpsServer) -> None:
    _error(server.call("alice", "POST", "/v1/jobs", "{not json"), 400, "INVALID_ARGUMENT")
    _error(server.call("alice", "POST", "/v1/jobs", "[1, 2]"), 400, "INVALID_ARGUMENT")
    _error(server.call("alice", "POST", "/v1/jobs", {}), 400, "INVALID_ARGUMENT", "spec")
    typo = server.call("alice", "POST", "/v1/jobs", {"spec": {"comand": "/bin/true"}})
    _error(typo, 400, "INVALID_ARGUMENT")
    assert "comand" in typo.json()["message"]
    empty = server.call("alice", "POST", "/v1/jobs", {"spec": {"command": ""}})
    _error(empty, 400, "INVALID_ARGUMENT", "command")
    nul = server.call("alice", "POST", "/v1/jobs", {"spec": {"command": "/bin/true\u0000x"}})
    _error(nul, 400, "INVALID_ARGUMENT", "command")
    wait = server.call("alice", "POST", "/v1/jobs", {"spec": TRUE, "waitSeconds": 1e9})
    _error(wait, 400, "INVALID_ARGUMENT", "wait_seconds")
    # A command that cannot start is a job that failed to start, not a refused request.
    missing = server.call(
        "alice", "POST", "/v1/jobs", {"spec": {"command": "/no/such/cmd"}, "waitSeconds": 20}
    )
    assert missing.status == 201
    assert missing.json()["job"]["endReason"] == "END_REASON_FAILED_TO_START"
    _error(server.call("alice", "GET", "/v1/jobs?staet=running"), 400, "INVALID_ARGUMENT", "staet")
    _error(server.call("alice", "GET", "/v1/jobs?state=asleep"), 400, "INVALID_ARGUMENT", "state")
    _error(
        server.call("alice", "GET", "/v1/jobs?page_size=-1"), 400, "INVALID_ARGUMENT", "page_size"
    )
    _error(
        server.call("alice", "GET", "/v1/jobs?page_token=forged"),
        400,
        "INVALID_ARGUMENT",
        "page_token",
    )
    _error(server.call("alice", "GET", "/v1/jobs?label=novalue"), 400, "INVALID_ARGUMENT", "label")
    job = server.submit("alice", TRUE, waitSeconds=20)
    grace = server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"graceSeconds": -1})
    _error(grace, 400, "INVALID_ARGUMENT", "grace_seconds")
    signal = server.call("alice", "POST", f"/v1/jobs/{job['id']}/signal", {"signal": 999})
    _error(signal, 400, "INVALID_ARGUMENT", "signal")


def test_unknown_jobs_routes_and_methods(server: HttpsServer) -> None:
    unknown = "f" * 32
    _error(server.call("alice", "GET", f"/v1/jobs/{unknown}"), 404, "NOT_FOUND")
    _error(server.call("alice", "POST", f"/v1/jobs/{unknown}/stop"), 404, "NOT_FOUND")
    _error(server.call("alice", "GET", f"/v1/jobs/{unknown}/output"), 404, "NOT_FOUND")
    _error(server.call("alice", "GET", f"/v1/jobs/{unknown}/events"), 404, "NOT_FOUND")
    _error(server.call("alice", "GET", "/v1/nothing-here"), 404, "NOT_FOUND")
    wrong = server.call("alice", "PUT", "/v1/jobs")
    _error(wrong, 405, "UNIMPLEMENTED")
    assert "POST" in wrong.headers["allow"] and "GET" in wrong.headers["allow"]


def test_every_response_carries_the_security_headers(server: HttpsServer) -> None:
    for path in ("/", "/static/app.js", "/v1/me", "/v1/jobs/" + "0" * 32):
        headers = server.curl("alice", path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cross-origin-resource-policy"] == "same-origin"
