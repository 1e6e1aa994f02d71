"""The authorization matrix over HTTPS, with curl and the five users of examples/policy.toml.

admin may do anything; operator, alice and bob submit and control their own jobs; viewer
reads everyone's and changes nothing; a name the policy does not list may do nothing. A job
the caller may not read is 404 exactly like an unknown one; one it may read but not change
is 403. gRPC answers the same caller the same way: one authorize path.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from https_harness import HttpsServer, https_serve, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

READERS = ("admin", "viewer", "alice")
BLIND = ("operator", "bob", "mallory")  # may not read alice's jobs
SLEEP = shell("sleep 60")
CONTROL = ("stop", "signal", "pause", "resume")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    with https_serve(tmp_path_factory.mktemp("authz")) as running:
        yield running


def _body(action: str) -> dict[str, int]:
    return {"signal": 18} if action == "signal" else {}  # SIGCONT: harmless


def test_reading_a_job(server: HttpsServer) -> None:
    job = server.submit("alice", shell("echo secret"), waitSeconds=20)
    unknown = "e" * 32
    for path in ("", "/output", "/events"):
        for cn in READERS:
            reply = server.curl(cn, f"/v1/jobs/{job['id']}{path}")
            assert reply.status == 200, (cn, path, reply)
            if path == "/output":
                assert reply.body == b"secret\n"
        for cn in BLIND:
            hidden = server.curl(cn, f"/v1/jobs/{job['id']}{path}")
            absent = server.curl(cn, f"/v1/jobs/{unknown}{path}")
            assert hidden.status == absent.status == 404, (cn, path)
            # Nothing tells a hidden job from one that does not exist, but the id itself.
            assert hidden.json()["code"] == absent.json()["code"] == "NOT_FOUND"
            assert hidden.json()["message"].replace(job["id"], unknown) == absent.json()["message"]


def test_reading_over_grpc_gives_the_same_answers(server: HttpsServer) -> None:
    job = server.submit("alice", {"command": "/bin/true"}, waitSeconds=20)
    for cn in READERS:
        assert server.stub(cn).Get(pb.GetRequest(job_id=job["id"]), timeout=20).job.id == job["id"]
    for cn in BLIND:
        with pytest.raises(grpc.RpcError) as caught:
            server.stub(cn).Get(pb.GetRequest(job_id=job["id"]), timeout=20)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_controlling_a_job(server: HttpsServer) -> None:
    job = server.submit("alice", SLEEP)
    server.wait_state(job["id"], "JOB_STATE_RUNNING")
    path = f"/v1/jobs/{job['id']}"
    for action in CONTROL:
        for cn in BLIND:
            reply = server.call(cn, "POST", f"{path}/{action}", _body(action))
            assert reply.status == 404 and reply.code == "NOT_FOUND", (cn, action, reply)
        denied = server.call("viewer", "POST", f"{path}/{action}", _body(action))
        assert denied.status == 403 and denied.code == "PERMISSION_DENIED", (action, denied)
    assert server.job("admin", job["id"])["state"] == "JOB_STATE_RUNNING"
    for cn in ("admin", "alice"):
        assert server.call(cn, "POST", f"{path}/signal", {"signal": 18}).status == 200
        assert server.call(cn, "POST", f"{path}/pause").json()["job"]["state"] == "JOB_STATE_PAUSED"
        assert (
            server.call(cn, "POST", f"{path}/resume").json()["job"]["state"] == "JOB_STATE_RUNNING"
        )
    stopped = server.call("admin", "POST", f"{path}/stop", {"force": True})
    assert stopped.status == 200 and stopped.json()["job"]["endReason"] == "END_REASON_STOPPED"
    own = server.submit("alice", SLEEP)
    assert server.call("alice", "POST", f"/v1/jobs/{own['id']}/stop", {"force": True}).status == 200


def test_releasing_a_held_job(server: HttpsServer) -> None:
    held = [server.submit("alice", {"command": "/bin/true", "hold": True}) for _ in range(2)]
    path = f"/v1/jobs/{held[0]['id']}/release"
    assert server.call("bob", "POST", path).status == 404
    assert server.call("viewer", "POST", path).status == 403
    assert server.call("alice", "POST", path).status == 200  # its owner, who may submit
    assert server.call("admin", "POST", f"/v1/jobs/{held[1]['id']}/release").status == 200


def test_purging_a_job(server: HttpsServer) -> None:
    done = [server.submit("alice", {"command": "/bin/true"}, waitSeconds=20) for _ in range(2)]
    path = f"/v1/jobs/{done[0]['id']}"
    assert server.call("bob", "DELETE", path).status == 404
    assert server.call("operator", "DELETE", path).status == 404
    assert server.call("viewer", "DELETE", path).status == 403
    assert server.call("viewer", "POST", "/v1/purge", {"jobIds": [done[0]["id"]]}).status == 403
    assert server.call("alice", "DELETE", path).status == 200
    assert server.call("admin", "DELETE", f"/v1/jobs/{done[1]['id']}").status == 200
    # Purging by filter removes only what the caller may purge.
    bobs = server.submit("bob", {"command": "/bin/true"}, waitSeconds=20)
    swept = server.call("alice", "POST", "/v1/purge", {"owner": "bob", "endedBefore": 4e9})
    assert swept.status == 200 and swept.json()["jobIds"] == []
    assert server.job("bob", bobs["id"])["id"] == bobs["id"]


def test_submitting(server: HttpsServer) -> None:
    for cn in ("admin", "operator", "alice", "bob"):
        job = server.submit(cn, {"command": "/bin/true"})
        assert job["owner"] == cn
    for cn in ("viewer", "mallory"):
        reply = server.call(cn, "POST", "/v1/jobs", {"spec": {"command": "/bin/true"}})
        assert reply.status == 403 and reply.code == "PERMISSION_DENIED", cn


def test_listing_shows_only_what_each_may_read(server: HttpsServer) -> None:
    tag = {"tag": "list-matrix"}
    alices = server.submit("alice", {"command": "/bin/true", "labels": tag}, waitSeconds=20)
    bobs = server.submit("bob", {"command": "/bin/true", "labels": tag}, waitSeconds=20)
    expected = {
        "admin": {alices["id"], bobs["id"]},
        "viewer": {alices["id"], bobs["id"]},
        "alice": {alices["id"]},
        "bob": {bobs["id"]},
        "operator": set(),
        "mallory": set(),
    }
    for cn, ids in expected.items():
        reply = server.call(cn, "GET", "/v1/jobs?label=tag=list-matrix")
        assert reply.status == 200, cn
        assert {job["id"] for job in reply.json()["jobs"]} == ids, cn
