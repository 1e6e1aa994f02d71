"""The web console in a real browser: headless Chromium with alice's and bob's client
certificates, against ``worker serve`` running both transports.

Alice opens the console, sees her running job, its output appearing live, stops it and sees
it stopped; bob does not see it. A page on another site cannot make alice's browser stop a
job. A job submitted over gRPC is followed over HTTPS and stopped from the console.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import Browser, auto_select_certificate, chromium, missing
from grpc_harness import collect
from https_harness import HttpsServer, curl_stream, grpc_spec, https_serve, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

_absent = missing()
pytestmark = pytest.mark.skipif(
    bool(_absent),
    reason="no browser here: missing "
    + ", ".join(_absent)
    + " (apt-get install -y chromium chromium-driver libnss3-tools; pip install selenium)",
)

#: A job that prints a numbered tick five times a second until stopped.
TICKER = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    with https_serve(tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def browsers(
    server: HttpsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Browser]]:
    directory = tmp_path_factory.mktemp("browsers")
    with (
        auto_select_certificate(server.origin),
        chromium(directory, "alice", server.pki.client("alice"), server.pki.ca_path) as alice,
        chromium(directory, "bob", server.pki.client("bob"), server.pki.ca_path) as bob,
    ):
        yield {"alice": alice, "bob": bob}


def _ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


def _open_console(browser: Browser, server: HttpsServer) -> None:
    browser.open(server.url("/"))
    browser.wait(
        lambda d: browser.text("whoami") == f"signed in as {browser.name}", "the caller's name"
    )
    browser.wait(lambda d: browser.text("page-number") == "page 1", "the first page of jobs")


def _stop_from_the_job_page(browser: Browser) -> None:
    browser.click("action-stop")
    browser.wait(
        lambda d: browser.attribute("job-state", "data-state") == "ended", "the job to end"
    )
    assert "stopped" in browser.text("job-state")
    browser.wait(lambda d: browser.text("output-status") == "(complete)", "the output to end")


def test_alice_follows_her_job_live_and_stops_it(
    server: HttpsServer, browsers: dict[str, Browser]
) -> None:
    alice = browsers["alice"]
    job = server.submit("alice", shell(TICKER, name="ticker", labels={"team": "a"}))
    _open_console(alice, server)
    alice.wait(lambda d: job["id"] in alice.row_ids(), "alice's job in her list")
    alice.click_row(job["id"])
    alice.wait(lambda d: alice.text("job-id") == job["id"], "the job page")
    alice.wait(lambda d: alice.attribute("job-state", "data-state") == "running", "running")
    assert alice.text("job-record").count("ticker") == 1
    first = alice.wait(lambda d: _ticks(alice.text("output")), "the first output")
    # Live: more output keeps arriving on the open page, in order, nothing skipped.
    seen = alice.wait(
        lambda d: (t := _ticks(alice.text("output"))) and t[-1] >= first[-1] + 5 and t,
        "more output to arrive",
    )
    assert seen == list(range(len(seen)))
    # Pause freezes it (no more output), resume lets it go on.
    alice.click("action-pause")
    alice.wait(lambda d: alice.attribute("job-state", "data-state") == "paused", "paused")
    assert server.job("alice", job["id"])["state"] == "JOB_STATE_PAUSED"
    alice.click("action-resume")
    alice.wait(lambda d: alice.attribute("job-state", "data-state") == "running", "resumed")
    before = _ticks(alice.text("output"))[-1]
    alice.wait(lambda d: _ticks(alice.text("output"))[-1] > before, "output after resuming")
    _stop_from_the_job_page(alice)
    record = server.job("admin", job["id"])
    assert record["state"] == "JOB_STATE_ENDED" and record["endReason"] == "END_REASON_STOPPED"
    # Back on the list, the job shows as ended.
    alice.open(server.url("/"))
    alice.wait(lambda d: job["id"] in alice.row_ids(), "the job in the list")
    alice.wait(lambda d: "ended" in alice.row_text(job["id"]), "the job shown as ended")


def test_bob_does_not_see_alices_job(server: HttpsServer, browsers: dict[str, Browser]) -> None:
    bob = browsers["bob"]
    alices = server.submit("alice", shell("sleep 60"))
    bobs = server.submit("bob", shell("sleep 60", name="beta"))
    done = server.submit("bob", shell("true", name="gamma"), waitSeconds=20)
    _open_console(bob, server)
    bob.wait(lambda d: {bobs["id"], done["id"]} <= set(bob.row_ids()), "bob's jobs in his list")
    assert alices["id"] not in bob.row_ids()
    # The filters narrow the list: by name, by state.
    bob.driver.find_element("id", "filter-name").send_keys("beta")
    bob.driver.find_element("css selector", "#filters button").click()
    bob.wait(lambda d: bob.row_ids() == [bobs["id"]], "only the job named beta")
    bob.driver.find_element("id", "filter-name").clear()
    bob.driver.find_element("css selector", "#filter-state option[value=ended]").click()
    bob.driver.find_element("css selector", "#filters button").click()
    bob.wait(lambda d: done["id"] in bob.row_ids() and bobs["id"] not in bob.row_ids(), "ended")
    bob.open(server.url(f"/#/jobs/{alices['id']}"))
    bob.wait(lambda d: "No such job" in bob.text("error"), "'no such job'")
    assert bob.text("output") == ""
    for job in (alices, bobs):
        server.call("admin", "POST", f"/v1/jobs/{job['id']}/stop", {"force": True})


class _Attacker(http.server.BaseHTTPRequestHandler):
    """A page on another site (plain HTTP, another port) that tries to stop a job."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: object) -> None:
        pass


def _attacker_page(target: str) -> bytes:
    # The classic: a form auto-submitted with a JSON-looking text/plain body; and fetch()
    # with JSON and the custom header, which needs a CORS preflight the server never grants.
    return f"""<!doctype html><html><body>
<script>
fetch("{target}", {{method: "POST", credentials: "include",
  headers: {{"Content-Type": "application/json", "X-Worker-Client": "evil"}},
  body: '{{"force": true}}'}})
  .then(() => {{ document.title = "fetch sent"; }}, () => {{ document.title = "fetch blocked"; }})
  .finally(() => document.getElementById("f").submit());
</script>
<form id="f" method="post" enctype="text/plain" action="{target}">
<input type="hidden" name='{{"force": true, "x": "' value='"}}'>
</form></body></html>""".encode()


@pytest.fixture
def attacker() -> Iterator[tuple[type[_Attacker], str]]:
    handler = type("Attacker", (_Attacker,), {})
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{site.server_address[1]}/"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(10)


def test_a_page_on_another_site_cannot_stop_a_job(
    server: HttpsServer,
    browsers: dict[str, Browser],
    attacker: tuple[type[_Attacker], str],
) -> None:
    alice = browsers["alice"]
    job = server.submit("alice", shell("sleep 60"))
    handler, url = attacker
    handler.page = _attacker_page(server.url(f"/v1/jobs/{job['id']}/stop"))
    alice.open(url)
    # The form's answer replaces the attacker's page: the server's refusal, in JSON.
    alice.wait(lambda d: d.current_url.startswith(server.origin), "the form to be posted")
    alice.wait(lambda d: "PERMISSION_DENIED" in d.page_source, "the refusal")
    assert server.job("alice", job["id"])["state"] == "JOB_STATE_RUNNING"
    server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"force": True})


def test_a_job_submitted_over_grpc_is_followed_over_https_and_stopped_from_the_console(
    server: HttpsServer, browsers: dict[str, Browser], tmp_path: Path
) -> None:
    alice = browsers["alice"]
    stub = server.stub("alice")
    job = stub.Submit(pb.SubmitRequest(spec=grpc_spec(TICKER)), timeout=20).job
    path = f"/v1/jobs/{job.id}/output?follow=true"
    with curl_stream(server, "alice", path) as follower:
        follower.wait_for(lambda got: b"tick 3\n" in got)
        alice.open(server.url(f"/#/jobs/{job.id}"))
        alice.wait(lambda d: len(_ticks(alice.text("output"))) >= 3, "the output on the page")
        _stop_from_the_job_page(alice)
        followed = follower.finish()  # the stream ends by itself: the job has ended
    ended = stub.Get(pb.GetRequest(job_id=job.id), timeout=20).job
    assert ended.end_reason == pb.END_REASON_STOPPED
    ticks = _ticks(followed.decode())
    assert ticks == list(range(len(ticks))) and len(ticks) >= 4
    # What HTTPS delivered is exactly what gRPC replays.
    tail = collect(stub.Tail(pb.TailRequest(job_id=job.id), timeout=20))
    assert followed == tail[pb.STREAM_STDOUT]
