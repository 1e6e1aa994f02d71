"""``worker job`` end to end: the CLI against a real engine behind a real mTLS server."""

from __future__ import annotations

import json
import re

import pytest
from grpc_harness import Harness, wait_for
from helpers import alive
from job_cli_harness import run

from worker_core import JobState

ID_RE = re.compile(r"[0-9a-f]{32}")


def submit(env: dict[str, str], *argv: str) -> str:
    result = run(["submit", "--", *argv], env)
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert ID_RE.fullmatch(job_id), result.stdout
    return job_id


def ended(harness: Harness, job_id: str) -> None:
    wait_for(lambda: harness.engine.get(job_id).is_finished, what=f"job {job_id} to end")


# --- submit -----------------------------------------------------------------------------------


def test_submit_prints_only_the_id(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "/bin/true")
    ended(harness, job_id)
    job = harness.engine.get(job_id)
    assert job.owner_name == "alice"
    assert job.exit_code == 0


def test_submit_passes_the_spec_flags(harness: Harness, env: dict[str, str]) -> None:
    result = run(
        ["submit", "-e", "GREETING=hi there", "--cwd", "/tmp", "--timeout", "30", "--",
         "sh", "-c", 'echo "$GREETING from $(pwd)"'],
        env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    ended(harness, job_id)
    job = harness.engine.get(job_id)
    assert job.spec.env["GREETING"] == "hi there"
    assert job.spec.timeout == 30
    assert harness.engine.output(job_id) == b"hi there from /tmp\n"


def test_submit_wait_streams_output_and_exits_with_the_code(env: dict[str, str]) -> None:
    script = "printf 'out\\0bytes\\377'; printf 'err line\\n' >&2; exit 7"
    result = run(["submit", "--wait", "--", "sh", "-c", script], env)
    assert result.exit_code == 7, result.output
    assert result.stdout_bytes == b"out\0bytes\xff"
    assert result.stderr_bytes == b"err line\n"


def test_submit_wait_killed_by_a_signal_exits_128_plus_n(env: dict[str, str]) -> None:
    result = run(["submit", "--wait", "--", "sh", "-c", "kill -KILL $$"], env)
    assert result.exit_code == 128 + 9
    assert re.fullmatch(r"worker job: job [0-9a-f]{32} killed by SIGKILL\n", result.stderr)


def test_submit_wait_timed_out_exits_124_and_says_so(env: dict[str, str]) -> None:
    result = run(["submit", "--wait", "--timeout", "300ms", "--", "sleep", "30"], env)
    assert result.exit_code == 124
    assert re.fullmatch(r"worker job: job [0-9a-f]{32} timed out: .*\n", result.stderr)


def test_submit_wait_failed_to_start_exits_126_and_says_so(env: dict[str, str]) -> None:
    result = run(["submit", "--wait", "--cwd", "/", "--", "/etc/passwd"], env)
    assert result.exit_code == 126
    assert "failed to start" in result.stderr, result.stderr


def test_submit_refused_spec_is_the_servers_message(env: dict[str, str]) -> None:
    result = run(["submit", "--", "no-such-command-anywhere"], env)
    assert result.exit_code == 1
    assert result.stderr.startswith("worker job: error: command: 'no-such-command-anywhere'")
    assert len(result.stderr.splitlines()) == 1


def test_submit_bad_flag_is_a_usage_error_before_connecting(env: dict[str, str]) -> None:
    result = run(["submit", "--memory", "lots", "--", "true"], {**env, "WORKER_SERVER": "x:1"})
    assert result.exit_code == 2
    assert "'--memory'" in result.stderr


# --- get / list -------------------------------------------------------------------------------


def test_get_human_and_json(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "sh", "-c", "exit 3")
    ended(harness, job_id)
    human = run(["get", job_id], env)
    assert human.exit_code == 0, human.output
    fields = dict(line.split(":", 1) for line in human.stdout.splitlines() if ": " in line)
    assert fields["id"].strip() == job_id
    assert fields["owner"].strip() == "alice"
    assert fields["command"].strip() == "sh -c 'exit 3'"
    assert fields["state"].strip() == "exited"  # the word list shows and --state takes
    assert fields["exit code"].strip() == "3"
    assert "cpu_seconds" in human.stdout  # facts

    as_json = run(["get", "--json", job_id], env)
    assert as_json.exit_code == 0
    record = json.loads(as_json.stdout)
    assert record["id"] == job_id
    assert record["state"] == "ended"
    assert record["end_reason"] == "exited"
    assert record["exit_code"] == 3
    assert record["spec"]["args"] == ["-c", "exit 3"]  # the library's record shape
    assert record["owner"]["name"] == "alice"


def test_list_table_and_filters(harness: Harness, env: dict[str, str]) -> None:
    sleeper = submit(env, "sleep", "30")
    done = submit(env, "/bin/true")
    ended(harness, done)
    try:
        table = run(["list"], env)
        assert table.exit_code == 0, table.output
        header, *rows = table.stdout.splitlines()
        assert header.split() == [
            "ID",
            "NAME",
            "OWNER",
            "STATE",
            "REASON",
            "EXIT",
            "AGE",
            "TIME",
            "LABELS",
            "COMMAND",
        ]
        by_id = {row.split()[0]: row.split() for row in rows}
        assert by_id[sleeper][1:6] == ["-", "alice", "running", "-", "-"]
        assert by_id[sleeper][-3:] == ["-", "sleep", "30"]
        assert by_id[done][1:6] == ["-", "alice", "exited", "-", "0"]

        running = run(["list", "--json", "--state", "running"], env)
        ids = [job["id"] for job in json.loads(running.stdout)]
        assert sleeper in ids and done not in ids

        none = run(["list", "--json", "--owner", "somebody-else"], env)
        assert json.loads(none.stdout) == []
    finally:
        harness.engine.stop(sleeper, grace=0)


# --- stop -------------------------------------------------------------------------------------


def test_stop_prints_the_final_status(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "sleep", "30")
    wait_for(lambda: harness.engine.get(job_id).state is JobState.RUNNING)
    pid = harness.engine.get(job_id).pid
    assert pid is not None
    result = run(["stop", "--grace", "5", job_id], env)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{job_id} ended: stopped on request (SIGTERM)\n"
    assert not alive(pid)
    again = run(["stop", job_id], env)  # an ended job: its final status again
    assert again.stdout == result.stdout


def test_stop_force_kills_at_once(harness: Harness, env: dict[str, str]) -> None:
    # The job says so if it gets a SIGTERM, and outlives it: with --force it gets none.
    job_id = submit(env, "sh", "-c", "trap 'echo TERM' TERM; echo up; while :; do sleep 0.1; done")
    wait_for(lambda: harness.engine.output(job_id) == b"up\n", what="the trap to be set")
    result = run(["stop", "--force", job_id], env)
    assert result.stdout.endswith("stopped on request (SIGKILL)\n"), result.stdout
    assert harness.engine.output(job_id) == b"up\n", "--force sent a SIGTERM first"


# --- tail -------------------------------------------------------------------------------------

TWO_STREAMS = "printf 'o1\\n'; printf 'e1\\n' >&2; printf 'o2\\n'; printf 'e2\\n' >&2"


def test_tail_of_an_ended_job_prints_everything(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "sh", "-c", TWO_STREAMS)
    ended(harness, job_id)
    both = run(["tail", job_id], env)
    assert both.exit_code == 0, both.output
    assert (both.stdout, both.stderr) == ("o1\no2\n", "e1\ne2\n")
    only_out = run(["tail", "--stdout", job_id], env)
    assert (only_out.stdout, only_out.stderr) == ("o1\no2\n", "")
    only_err = run(["tail", "--stderr", job_id], env)
    assert (only_err.stdout, only_err.stderr) == ("", "e1\ne2\n")


def test_tail_of_a_running_job_prints_what_exists_and_exits(
    harness: Harness, env: dict[str, str]
) -> None:
    job_id = submit(env, "sh", "-c", "echo before; sleep 30")
    wait_for(lambda: harness.engine.output(job_id) == b"before\n")
    try:
        result = run(["tail", job_id], env)
        assert result.exit_code == 0, result.output
        assert result.stdout == "before\n"
        # It ended while the job still runs: it did not wait for the job.
        assert not harness.engine.get(job_id).is_finished
    finally:
        harness.engine.stop(job_id, grace=0)


def test_tail_follow_until_the_job_ends(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "sh", "-c", "echo one; sleep 0.5; echo two >&2; sleep 0.5; echo three")
    result = run(["tail", "-f", job_id], env)
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("one\nthree\n", "two\n")
    assert harness.engine.get(job_id).is_finished


def test_tail_from_resumes_at_an_offset(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "sh", "-c", "printf 0123456789; printf abcdef >&2")
    ended(harness, job_id)
    same = run(["tail", "--from", "4", job_id], env)
    assert (same.stdout, same.stderr) == ("456789", "ef")
    per_stream = run(["tail", "--from", "stdout=8,stderr=1", job_id], env)
    assert (per_stream.stdout, per_stream.stderr) == ("89", "bcdef")
    only = run(["tail", "--stderr", "--from", "5", job_id], env)
    assert (only.stdout, only.stderr) == ("", "f")


def test_tail_no_past_shows_only_new_output(harness: Harness, env: dict[str, str]) -> None:
    job_id = submit(env, "sh", "-c", "echo old; sleep 1; echo new")
    wait_for(lambda: harness.engine.output(job_id) == b"old\n")
    result = run(["tail", "-f", "--no-past", job_id], env)
    assert result.stdout == "new\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "x=1"], "is not OFFSET or stdout=N,stderr=M"),
        (["--from", "1", "--no-past"], "cannot be used together"),
    ],
)
def test_tail_bad_options(env: dict[str, str], argv: list[str], message: str) -> None:
    result = run(["tail", *argv, "0" * 32], env)
    assert result.exit_code == 2
    assert message in result.stderr
