"""Cross-site request protection: a browser sends its client certificate to any page that
asks, so a state-changing request must prove it came from the console or a program.

These are the requests a hostile page can make a browser send, played with curl holding a
valid certificate (the browser test plays the real thing in Chromium).
"""

from __future__ import annotations

from https_harness import HttpsServer, shell

EVIL = "Origin: https://evil.example"


def _running(server: HttpsServer) -> dict[str, object]:
    job = server.submit("alice", shell("sleep 60"))
    server.wait_state(str(job["id"]), "JOB_STATE_RUNNING")
    return job


def test_a_cross_site_form_post_is_refused(server: HttpsServer) -> None:
    job = _running(server)
    stop = f"/v1/jobs/{job['id']}/stop"
    # <form method=post action=.../stop>: urlencoded, multipart or text/plain, and the
    # browser names the page's origin. A JSON-looking text/plain body changes nothing.
    forms = [
        ("application/x-www-form-urlencoded", "force=true"),
        ("multipart/form-data; boundary=x", "--x\r\n\r\n--x--\r\n"),
        ("text/plain", '{"force": true}'),
    ]
    for content_type, body in forms:
        for origin in ([EVIL], ["Origin: null"], []):
            reply = server.curl(
                "alice",
                stop,
                method="POST",
                body=body,
                headers=[f"Content-Type: {content_type}", *origin],
                client_header=False,
            )
            assert reply.status in (403, 415), (content_type, origin, reply)
            assert reply.code in ("PERMISSION_DENIED", "INVALID_ARGUMENT")
    assert server.job("alice", str(job["id"]))["state"] == "JOB_STATE_RUNNING"
    server.call("alice", "POST", stop, {"force": True})


def test_json_from_another_origin_is_refused_even_with_the_custom_header(
    server: HttpsServer,
) -> None:
    job = _running(server)
    stop = f"/v1/jobs/{job['id']}/stop"
    reply = server.curl("alice", stop, method="POST", body={}, headers=[EVIL])
    assert reply.status == 403 and reply.code == "PERMISSION_DENIED"
    assert "evil.example" in reply.json()["message"]
    submit = server.curl(
        "alice", "/v1/jobs", method="POST", body={"spec": {"command": "/bin/true"}}, headers=[EVIL]
    )
    assert submit.status == 403
    assert server.job("alice", str(job["id"]))["state"] == "JOB_STATE_RUNNING"
    server.call("alice", "POST", stop, {"force": True})


def test_json_needs_a_matching_origin_or_the_custom_header(server: HttpsServer) -> None:
    job = _running(server)
    pause = f"/v1/jobs/{job['id']}/pause"
    bare = server.curl("alice", pause, method="POST", body={}, client_header=False)
    assert bare.status == 403 and "X-Worker-Client" in bare.json()["message"]
    same = server.curl(
        "alice",
        pause,
        method="POST",
        body={},
        headers=[f"Origin: {server.origin}"],
        client_header=False,
    )
    assert same.status == 200 and same.json()["job"]["state"] == "JOB_STATE_PAUSED"
    resumed = server.curl("alice", f"/v1/jobs/{job['id']}/resume", method="POST", body={})
    assert resumed.status == 200  # the custom header (the curl helper sends it)
    delete = server.curl(
        "alice", f"/v1/jobs/{job['id']}", method="DELETE", body={}, client_header=False
    )
    assert delete.status == 403
    server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"force": True})


def test_the_api_refuses_what_a_browser_marks_cross_site(server: HttpsServer) -> None:
    for site in ("cross-site", "same-site"):
        reply = server.curl("alice", "/v1/jobs", headers=[f"Sec-Fetch-Site: {site}"])
        assert reply.status == 403 and reply.code == "PERMISSION_DENIED", site
    for site in ("same-origin", "none"):
        assert server.curl("alice", "/v1/jobs", headers=[f"Sec-Fetch-Site: {site}"]).status == 200
    # The console itself may be opened from a link on another site.
    page = server.curl("alice", "/", headers=["Sec-Fetch-Site: cross-site"])
    assert page.status == 200 and b"/static/app.js" in page.body
