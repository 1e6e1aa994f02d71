"""Scheduling and control through the real ``worker`` program against a real ``worker serve``:
holds and releases, dependency chains, begin times, signals, pause and resume, ``wait`` and
its exit statuses, and every bad input as one clear line with nothing created or sent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from cli_server import RealServer, one_line_error, real_server
from grpc_harness import wait_for

ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with real_server(tmp_path_factory.mktemp("job-cli-scheduling")) as running:
        yield running


def record(server: RealServer, job_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(server.ok("get", "--json", job_id))
    return data


def state(server: RealServer, job_id: str) -> object:
    return record(server, job_id)["state"]


def output(server: RealServer, job_id: str) -> str:
    return server.ok("tail", job_id)


def job_count(server: RealServer) -> int:
    return len(json.loads(server.ok("list", "--json")))


# --- holds ------------------------------------------------------------------------------------


def test_a_held_job_waits_until_released_then_runs(server: RealServer) -> None:
    held = server.submit("--hold", "--", "echo", "released")
    assert state(server, held) == "held"
    summary = server.ok("get", held)
    assert re.search(r"^state: +held$", summary, re.M), summary
    assert f"worker job release {held}" in summary  # how to let it go, in words
    row = next(r for r in server.ok("list").splitlines() if r.startswith(held))
    assert row.split()[3] == "held"
    released = server.ok("release", held[:8])  # a prefix will do
    assert released.startswith(held)
    waited = server.job("wait", held)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout == f"{held} ended: exited with code 0\n"
    assert output(server, held) == "released\n"


def test_release_of_several_reports_each_and_fails_for_one_not_held(server: RealServer) -> None:
    first = server.submit("--hold", "--", "true")
    second = server.submit("--hold", "--", "true")
    running = server.submit("--", "sleep", "30")
    try:
        done = server.job("release", first, running, second)
        assert done.returncode == 1
        assert [line.split()[0] for line in done.stdout.splitlines()] == [first, second]
        [error] = done.stderr.splitlines()
        assert error.startswith("worker job: error: ") and running in error, error
        for job_id in (first, second):
            assert server.job("wait", "--timeout", "30s", job_id).returncode == 0
    finally:
        server.ok("stop", "--grace", "0", running)


# --- dependencies -----------------------------------------------------------------------------


def test_a_failing_job_ends_its_chain_as_dependency_failed_and_the_others_run(
    server: RealServer,
) -> None:
    first = server.submit("--", "sh", "-c", "sleep 0.5; exit 3")
    second = server.submit("--after", first, "--", "echo", "never")
    third = server.submit("--after", second[:10], "--", "echo", "never either")
    anyway = server.submit("--after-any", first, "--", "echo", "after any")
    on_failure = server.submit("--after-fail", first, "--", "echo", "cleanup")
    on_success = server.submit("--after", first, "--after-any", anyway, "--", "echo", "no")
    # While the first runs, the others wait on it, and say so as squeue does.
    listing = server.ok("list")
    header = listing.splitlines()[0].split()
    assert header[3:5] == ["STATE", "REASON"]
    rows = {r.split()[0]: r.split() for r in listing.splitlines()[1:]}
    if rows[first][3] == "running":  # not ended yet (it sleeps half a second)
        assert rows[second][3:5] == ["queued", "dependency"]

    assert server.job("wait", first).returncode == 3
    assert server.job("wait", anyway).returncode == 0
    assert server.job("wait", on_failure).returncode == 0
    assert output(server, anyway) == "after any\n"
    assert output(server, on_failure) == "cleanup\n"
    for job_id in (second, third, on_success):
        waited = server.job("wait", job_id)
        assert waited.returncode == 125, (job_id, waited.stdout, waited.stderr)
        assert "never ran" in waited.stdout
        data = record(server, job_id)
        assert (data["end_reason"], data["started_at"]) == ("dependency_failed", None)
        assert output(server, job_id) == ""
    dependency_failed = server.ok("list", "--state", "dependency_failed")
    assert {second, third, on_success} <= {r.split()[0] for r in dependency_failed.splitlines()[1:]}


def test_a_begin_time_keeps_a_job_queued_with_its_reason(server: RealServer) -> None:
    later = server.submit("--begin", "1h", "--", "true")
    soon = server.submit("--begin", "1s", "--priority", "5", "--", "echo", "began")
    try:
        data = record(server, later)
        assert (data["state"], data["queue_reason"]) == ("queued", "begin_time")
        begin_at = data["spec"]["begin_at"]  # type: ignore[index]
        assert isinstance(begin_at, float) and 3500 < begin_at - time.time() <= 3600
        summary = server.ok("get", later)
        assert re.search(r"^reason: +begin_time \(its begin time has not come\)$", summary, re.M)
        assert re.search(r"^not before: +\S+[+-]\d\d:\d\d \(in 59m\d\ds\)$", summary, re.M), summary
        row = next(r for r in server.ok("list").splitlines() if r.startswith(later))
        assert row.split()[3:5] == ["queued", "begin_time"]
        assert server.job("wait", "--timeout", "30s", soon).returncode == 0
        assert output(server, soon) == "began\n"
        assert record(server, soon)["spec"]["priority"] == 5  # type: ignore[index]
    finally:
        server.ok("stop", later)
    assert record(server, later)["started_at"] is None  # stopped without ever starting


def test_an_iso_begin_time_is_taken_as_local_time(server: RealServer) -> None:
    soon = time.localtime(time.time() + 3600)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", soon)
    job_id = server.submit("--begin", stamp, "--", "true")
    try:
        begin_at = record(server, job_id)["spec"]["begin_at"]  # type: ignore[index]
        assert begin_at == time.mktime(soon)
    finally:
        server.ok("stop", job_id)


# --- signals, pause, resume ---------------------------------------------------------------------


TRAPS = (
    "trap 'echo got USR1' USR1; trap 'echo got HUP' HUP; echo ready; while :; do sleep 0.05; done"
)


def test_a_signal_by_name_or_number_reaches_the_job(server: RealServer) -> None:
    job_id = server.submit("--", "sh", "-c", TRAPS)
    try:
        wait_for(lambda: output(server, job_id) == "ready\n", timeout=30, what="the traps")
        assert server.ok("signal", job_id, "USR1") == f"{job_id}: sent SIGUSR1 (running)\n"
        wait_for(lambda: "got USR1" in output(server, job_id), timeout=30, what="USR1")
        server.ok("signal", job_id[:6], "sighup")
        wait_for(lambda: "got HUP" in output(server, job_id), timeout=30, what="HUP")
        server.ok("signal", job_id, "-10")  # SIGUSR1's number here, as kill(1) takes it
        wait_for(
            lambda: output(server, job_id).count("got USR1") == 2, timeout=30, what="USR1 again"
        )
        assert state(server, job_id) == "running"  # a signal it catches does not end it
    finally:
        server.ok("stop", "--grace", "0", job_id)


COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"


def test_pause_freezes_the_job_and_resume_lets_it_go_on(server: RealServer) -> None:
    job_id = server.submit("--", "sh", "-c", COUNTER)
    try:
        wait_for(lambda: output(server, job_id).count("\n") >= 3, timeout=30, what="output")
        paused = server.ok("pause", job_id)
        assert paused.startswith(f"{job_id} paused")
        assert state(server, job_id) == "paused"
        before = output(server, job_id)
        time.sleep(1.0)  # twenty lines' worth, were it running
        assert output(server, job_id) == before, "a paused job went on writing"
        assert server.ok("list", "--state", "paused").count(job_id) == 1
        resumed = server.ok("resume", job_id)
        assert resumed.startswith(f"{job_id} running")
        wait_for(lambda: len(output(server, job_id)) > len(before), timeout=30, what="more output")
        # Stopping a paused job works: it is thawed, then stopped.
        server.ok("pause", job_id)
        stopped = server.ok("stop", "--grace", "5s", job_id)
        assert stopped == f"{job_id} ended: stopped on request (SIGTERM)\n"
    finally:
        server.job("stop", "--grace", "0", job_id)


# --- wait ----------------------------------------------------------------------------------------


def test_wait_exits_with_the_code_of_one_job_and_nonzero_if_any_of_several_failed(
    server: RealServer,
) -> None:
    seven = server.submit("--", "sh", "-c", "exit 7")
    fine = server.submit("--", "true")
    also_fine = server.submit("--", "true")
    one = server.job("wait", seven)
    assert (one.returncode, one.stdout) == (7, f"{seven} ended: exited with code 7\n")
    good = server.job("wait", fine, also_fine)
    assert good.returncode == 0
    assert good.stdout.splitlines() == [
        f"{fine} ended: exited with code 0",
        f"{also_fine} ended: exited with code 0",
    ]
    mixed = server.job("wait", fine, seven)
    assert mixed.returncode == 1
    assert len(mixed.stdout.splitlines()) == 2  # how each ended


def test_wait_any_returns_with_the_first_to_end(server: RealServer) -> None:
    slow = server.submit("--", "sleep", "30")
    quick = server.submit("--", "sh", "-c", "sleep 0.3; exit 4")
    try:
        done = server.job("wait", "--any", slow, quick)
        assert (done.returncode, done.stdout) == (4, f"{quick} ended: exited with code 4\n")
        assert state(server, slow) == "running"
    finally:
        server.ok("stop", "--grace", "0", slow)


def test_wait_gives_up_after_its_timeout_with_75(server: RealServer) -> None:
    slow = server.submit("--", "sleep", "30")
    try:
        done = server.job("wait", "--timeout", "500ms", slow)
        one_line_error(done, 75, "gave up after 0.5s", slow, "still running")
        assert state(server, slow) == "running"  # waiting never touches the job
    finally:
        server.ok("stop", "--grace", "0", slow)


# --- bad input: one clear line, nothing created, nothing sent ------------------------------------


def test_an_unknown_dependency_names_the_flag_and_creates_nothing(server: RealServer) -> None:
    before = job_count(server)
    for flag in ("--after", "--after-any", "--after-fail"):
        done = server.job("submit", flag, "f" * 32, "--", "true")
        one_line_error(done, 1, f"{flag} {'f' * 32}: no such job")
    # A job bob owns is not one alice may read: the same answer, so ids cannot be probed.
    bobs = server.submit("--hold", "--", "true", cn="bob")
    try:
        done = server.job("submit", "--after", bobs, "--", "true")
        one_line_error(done, 1, f"--after {bobs}: no such job")
    finally:
        server.ok("stop", bobs, cn="bob")
    assert job_count(server) == before


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--priority", "1001"], ["'--priority'", "1001"]),
        (["--priority", "high"], ["'--priority'", "high"]),
        (["--begin", "next tuesday"], ["'--begin'", "is neither a duration from now"]),
        (["--begin", "2024-13-45"], ["'--begin'", "2024-13-45"]),
        (["--timeout", "soon"], ["'--timeout'", "is not a duration"]),
        (["--after", " "], ["--after", "must name a job"]),
    ],
)
def test_bad_scheduling_flags_are_usage_errors_and_create_nothing(
    server: RealServer, argv: list[str], fragments: list[str]
) -> None:
    before = job_count(server)
    done = server.job("submit", *argv, "--", "true")
    one_line_error(done, 2, *fragments)
    assert job_count(server) == before


@pytest.mark.parametrize("name", ["SIGNOPE", "NOPE", "0", "65", "-99", "TERM9", "-"])
def test_an_unknown_signal_is_a_usage_error_and_nothing_is_sent(
    server: RealServer, name: str
) -> None:
    job_id = server.submit("--", "sh", "-c", TRAPS)
    try:
        wait_for(lambda: output(server, job_id) == "ready\n", timeout=30, what="the traps")
        done = server.job("signal", job_id, name)
        one_line_error(done, 2, "SIGNAL", repr(name))
        assert state(server, job_id) == "running"
        assert output(server, job_id) == "ready\n"
    finally:
        server.ok("stop", "--grace", "0", job_id)


def test_control_of_a_job_in_the_wrong_state_is_one_line(server: RealServer) -> None:
    finished = server.submit("--", "true")
    assert server.job("wait", finished).returncode == 0
    for command in ("pause", "resume", "signal"):
        argv = [command, finished, *(["TERM"] if command == "signal" else [])]
        one_line_error(server.job(*argv), 1, finished)
    running = server.submit("--", "sleep", "30")
    try:
        one_line_error(server.job("resume", running), 1, running)
        one_line_error(server.job("release", running), 1, running)
        assert state(server, running) == "running"
    finally:
        server.ok("stop", "--grace", "0", running)
    for command in ("pause", "resume", "release", "wait"):
        one_line_error(server.job(command, "e" * 32), 1, f"no such job: {'e' * 32}")
