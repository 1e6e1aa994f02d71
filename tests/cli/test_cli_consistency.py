"""The command line's conventions, each through the real ``worker`` program as a process.

One vocabulary of states; ``--json`` with typed values in the library's record shape; human
output with units, durations and local times; durations with units in every flag; one table
of exit statuses for ``worker run`` and ``submit --wait``; ``tail`` flags that combine;
errors that name the flag typed; an empty ``list`` that says so; ``--version``; the two
Ctrl-Cs of ``worker run``; ``job stop`` telling a terminal what it waits for; ``worker run``
in the caller's directory; shell completion.

The server is a real ``worker serve`` with ``cgroups`` (limits, usage and facts are real)
and ``rbac`` with the example policy, reached with the committed certificates.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import force_remove_parent, require_root, unique_parent
from cli_server import TIMEOUT, WORKER, RealServer, one_line_error, real_server
from grpc_harness import wait_for
from helpers import alive, wait_dead
from terminal import run_with_stderr_on_a_terminal

from worker_core import Job, JobSpec, job_to_dict
from worker_core._plugins import DISTRIBUTION
from worker_plugins.cli.exit_status import EXIT_STATUSES
from worker_plugins.cli.job.render import STATE_WORDS

LOCAL_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
MEMORY_HOG = "x = b'a' * (256 << 20)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    require_root()
    with real_server(tmp_path_factory.mktemp("cli-consistency"), cgroups=True) as running:
        yield running


def run_here(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``worker ARGS`` (not ``worker job``), to the end."""
    return subprocess.run(
        [WORKER, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=cwd,
        env=env,
    )


def fields(summary: str) -> dict[str, str]:
    """The ``label: value`` lines of ``get`` (not the indented usage and facts)."""
    return {
        label: value.strip()
        for line in summary.splitlines()
        if not line.startswith(" ") and ": " in line
        for label, value in [line.split(":", 1)]
    }


# --- one vocabulary of states ------------------------------------------------------------------


def test_every_state_list_shows_is_one_state_accepts(server: RealServer) -> None:
    jobs = {
        "running": server.submit("--", "sleep", "30"),
        "queued": server.submit("--begin", "1h", "--", "true"),
        "held": server.submit("--hold", "--", "true"),
        "exited": server.submit("--", "true"),
        "timed_out": server.submit("--timeout", "200ms", "--", "sleep", "30"),
        "failed_to_start": server.submit("--", "/etc/passwd"),
        "oom_killed": server.submit("--memory", "32M", "--", "python3", "-c", MEMORY_HOG),
    }
    jobs["stopped"] = server.submit("--", "sleep", "30")
    server.ok("stop", "--grace", "0", jobs["stopped"])
    jobs["paused"] = server.submit("--", "sleep", "30")
    wait_for(lambda: "running" in server.ok("get", jobs["paused"]), timeout=30, what="it to run")
    server.ok("pause", jobs["paused"])
    jobs["dependency_failed"] = server.submit("--after", jobs["failed_to_start"], "--", "true")
    try:
        for word in ("exited", "timed_out", "failed_to_start", "oom_killed", "dependency_failed"):
            server.job("wait", "--timeout", "30s", jobs[word])
        rows = {r.split()[0]: r.split() for r in server.ok("list").splitlines()[1:]}
        for word, job_id in jobs.items():
            shown = rows[job_id][3]
            assert shown == word, (word, rows[job_id])
            assert shown in STATE_WORDS
            chosen = json.loads(server.ok("list", "--json", "--state", shown))
            assert job_id in {job["id"] for job in chosen}, word
            assert fields(server.ok("get", job_id))["state"] == word  # get says the same
        ended = {job["id"] for job in json.loads(server.ok("list", "--json", "--state", "ended"))}
        assert {jobs["exited"], jobs["stopped"], jobs["oom_killed"]} <= ended
        assert jobs["running"] not in ended
        # The list of accepted words is the one the help documents.
        help_text = server.ok("list", "--help")
        for word in STATE_WORDS:
            assert word in help_text
    finally:
        for job_id in jobs.values():
            server.job("stop", "--grace", "0", job_id)


# --- --json: typed values, the library's record shape ------------------------------------------


def test_json_is_the_library_record_with_typed_values(server: RealServer) -> None:
    job_id = server.submit("--memory", "64M", "--timeout", "1m30s", "--", "sh", "-c", "echo hi")
    assert server.job("wait", job_id).returncode == 0
    record = json.loads(server.ok("get", "--json", job_id))
    library = job_to_dict(Job(id="x", owner=None, spec=JobSpec("true"), created_at=1.0))
    assert set(record) == set(library)
    assert set(record["spec"]) == set(library["spec"])
    assert record["spec"]["limits"]["memory_max"] == 64 << 20
    assert record["spec"]["timeout"] == 90.0
    facts = record["facts"]
    assert facts["oom_killed"] is False
    assert isinstance(facts["memory_peak"], int) and facts["memory_peak"] > 0
    assert isinstance(facts["cpu_seconds"], float)
    assert isinstance(record["created_at"], float) and record["exit_code"] == 0
    [listed] = [j for j in json.loads(server.ok("list", "--json")) if j["id"] == job_id]
    assert listed == record  # list --json: the same records


def test_a_running_job_shows_what_it_uses_now(server: RealServer) -> None:
    job_id = server.submit(
        "--", "python3", "-c", "x = b'a' * (8 << 20); import time; time.sleep(30)"
    )
    try:
        wait_for(
            lambda: (
                json.loads(server.ok("get", "--json", job_id))
                .get("usage", {})
                .get("memory_current", 0)
                > 8 << 20
            ),
            timeout=30,
            what="its memory to show",
        )
        usage = json.loads(server.ok("get", "--json", job_id))["usage"]
        assert isinstance(usage["memory_current"], int)
        assert isinstance(usage["cpu_seconds"], float)
        summary = server.ok("get", job_id)
        assert re.search(
            r"^usage now:\n  cpu_seconds: [\d.]+m?s\n  memory_current: [\d.]+ MiB$", summary, re.M
        ), summary
        server.ok("pause", job_id)
        assert "usage now:" in server.ok("get", job_id)  # paused: still there
    finally:
        server.ok("stop", "--grace", "0", job_id)
    assert "usage" not in json.loads(server.ok("get", "--json", job_id))


# --- human output: units, durations, local times -----------------------------------------------


def test_human_output_has_units_durations_and_local_times(server: RealServer) -> None:
    job_id = server.submit(
        "--memory", "64M", "--memory-high", "48M", "--cpus", "0.5", "--timeout", "1m30s",
        "--", "sh", "-c", "sleep 0.2",
    )  # fmt: skip
    assert server.job("wait", job_id).returncode == 0
    summary = server.ok("get", job_id)
    shown = fields(summary)
    assert shown["limits"].startswith("memory 64 MiB, memory-high 48 MiB, cpus 0.5")
    assert "timeout 1m30s" in shown["limits"]
    assert re.fullmatch(r"\d+ms|\d+\.\ds", shown["ran for"]), shown["ran for"]
    for label in ("created", "started", "finished"):
        assert re.fullmatch(LOCAL_TIME + r" \(\S+ ago\)", shown[label]), shown[label]
    stamp = re.match(LOCAL_TIME, shown["created"])
    assert stamp is not None
    offset = time.strftime("%z")
    assert stamp.group(0).endswith(f"{offset[:3]}:{offset[3:]}")  # this machine's zone
    assert re.search(r"^  memory_peak: [\d.]+ (KiB|MiB)$", summary, re.M), summary
    assert re.search(r"^  oom_killed: no$", summary, re.M), summary


# --- durations with units ------------------------------------------------------------------------


def test_every_duration_flag_takes_units(server: RealServer, tmp_path: Path) -> None:
    job_id = server.submit("--timeout", "1h30m", "--", "true")
    assert json.loads(server.ok("get", "--json", job_id))["spec"]["timeout"] == 5400.0
    assert server.job("wait", "--timeout", "1m", job_id).returncode == 0
    trapper = server.submit("--", "sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.05; done")
    wait_for(lambda: server.ok("tail", trapper) == "up\n", timeout=30, what="the trap")
    stopped = server.job("stop", "--grace", "500ms", trapper)
    assert stopped.stdout == f"{trapper} ended: stopped on request (SIGKILL)\n"
    ran = run_here("run", "--grace", "2s", "--timeout", "300ms", "--", "sleep", "30", cwd=tmp_path)
    assert ran.returncode == 124, ran.stderr
    for argv in (["run", "--timeout", "5 minutes"], ["run", "--grace", "-1s"]):
        done = run_here(*argv, "--", "true", cwd=tmp_path)
        assert done.returncode == 2 and f"'{argv[1]}'" in done.stderr, done.stderr


# --- one table of exit statuses ------------------------------------------------------------------


CASES = [
    # (what the job does, extra flags, the status, what stderr says)
    (["sh", "-c", "exit 3"], [], 3, None),
    (["sh", "-c", "kill -TERM $$"], [], 143, "killed by SIGTERM"),
    (["sleep", "30"], ["--timeout", "300ms"], 124, "timed out"),
    (["/etc/passwd"], [], 126, "failed to start"),
    (["python3", "-c", MEMORY_HOG], ["--memory", "32M"], 137, "OOM killer"),
]


@pytest.mark.parametrize(("argv", "flags", "status", "said"), CASES)
def test_run_and_submit_wait_exit_alike(
    server: RealServer,
    tmp_path: Path,
    argv: list[str],
    flags: list[str],
    status: int,
    said: str | None,
) -> None:
    parent = unique_parent()
    config = tmp_path / "local.toml"
    config.write_text(f'[plugins.cgroups]\nparent = "{parent}"\n')
    try:
        local = run_here(
            "run",
            "--plugins",
            "cgroups",
            "--config",
            str(config),
            *flags,
            "--",
            *argv,
            cwd=tmp_path,
        )
    finally:
        force_remove_parent(parent)
    remote = server.job("submit", "--wait", *flags, "--", *argv)
    for done in (local, remote):
        assert done.returncode == status, (done.args, done.stdout, done.stderr)
        if said is None:
            assert "ended" not in done.stderr
        else:
            assert said in done.stderr, done.stderr
            assert "Traceback" not in done.stderr


def test_a_job_stopped_while_submit_wait_follows_it_exits_143(server: RealServer) -> None:
    follower = subprocess.Popen(
        [WORKER, "job", "submit", "--wait", "--", "sh", "-c", "echo up; exec sleep 30"],
        env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "up\n"
        [running] = json.loads(server.ok("list", "--json", "--state", "running"))
        server.ok("stop", running["id"])
        _, err = follower.communicate(timeout=TIMEOUT)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
    assert follower.returncode == 143 and "stopped on request" in err, err


def test_a_never_run_dependant_exits_125_through_wait(server: RealServer) -> None:
    failed = server.submit("--", "sh", "-c", "exit 1")
    after = server.submit("--after", failed, "--", "true")
    done = server.job("wait", after)
    assert done.returncode == 125 and "never ran" in done.stdout


def test_the_readme_documents_the_same_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for how, status, meaning in EXIT_STATUSES:
        assert f"| {how} | {status} | {meaning} |" in readme, how


# --- tail ----------------------------------------------------------------------------------------


def test_tail_stdout_and_stderr_together_mean_both(server: RealServer) -> None:
    job_id = server.submit("--", "sh", "-c", "echo out; echo err >&2")
    server.job("wait", job_id)
    both = server.job("tail", "--stdout", "--stderr", job_id)
    assert (both.stdout, both.stderr) == ("out\n", "err\n")
    assert server.job("tail", "--stderr", job_id).stdout == ""


def test_tail_n_prints_the_last_lines_then_follows(server: RealServer) -> None:
    finished = server.submit("--", "sh", "-c", "seq 1 100; echo e1 >&2; echo e2 >&2; printf end")
    server.job("wait", finished)
    last = server.job("tail", "-n", "3", finished)
    assert (last.stdout, last.stderr) == ("99\n100\nend", "e1\ne2\n")
    assert server.job("tail", "-n", "2", "--stdout", finished).stdout == "100\nend"
    assert server.job("tail", "-n", "0", finished).stdout == ""
    live = server.submit("--", "sh", "-c", "seq 1 50; sleep 1; echo later; sleep 0.5; echo last")
    wait_for(lambda: server.ok("tail", live).endswith("50\n"), timeout=30, what="the first lines")
    followed = server.job("tail", "-n", "2", "-f", live)
    assert followed.stdout == "49\n50\nlater\nlast\n", followed.stdout
    one_line_error(server.job("tail", "-n", "2", "--from", "3", live), 2, "cannot be used together")


# --- errors name the flag typed ------------------------------------------------------------------


def test_refusals_name_the_flag_typed(server: RealServer, tmp_path: Path) -> None:
    local = run_here("run", "--memory", "64M", "--", "true", cwd=tmp_path)
    assert local.returncode == 125
    assert local.stderr.strip().startswith("worker: error: --memory: "), local.stderr
    assert "limits.memory_max" not in local.stderr
    remote = server.job("submit", "--cwd", "/no/such/directory", "--", "true")
    line = one_line_error(remote, 1, "--cwd: ")
    assert "cwd:" not in line.replace("--cwd:", "")
    bad = tmp_path / "server.toml"
    bad.write_text("[engine]\nstop_grace = 'soon'\n")
    config = run_here("run", "--config", str(bad), "--", "true", cwd=tmp_path)
    assert config.returncode == 125
    assert "server.toml:2: engine.stop_grace" in config.stderr, config.stderr


# --- an empty list; --version ---------------------------------------------------------------------


def test_an_empty_list_prints_its_header_and_says_there_are_none(server: RealServer) -> None:
    done = server.job("list", "--owner", "nobody-at-all")
    assert done.returncode == 0
    assert done.stdout.split() == [
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
    assert done.stderr == "worker job: no jobs match\n"
    assert server.job("list", "--json", "--owner", "nobody-at-all").stdout.strip() == "[]"


def test_version_is_the_package_version() -> None:
    done = run_here("--version")
    version = importlib.metadata.version(DISTRIBUTION)  # the distribution, not the program
    assert (done.returncode, done.stdout) == (0, f"worker {version}\n")


# --- interaction ------------------------------------------------------------------------------------


def test_run_runs_here_with_home_set(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    env = {**os.environ, "HOME": str(tmp_path)}
    here = run_here("run", "--", "sh", "-c", 'pwd; echo "$HOME"', cwd=tmp_path / "project", env=env)
    assert here.stdout == f"{tmp_path / 'project'}\n{tmp_path}\n", here.stderr
    relative = run_here("run", "--cwd", "..", "--", "pwd", cwd=tmp_path / "project", env=env)
    assert relative.stdout == f"{tmp_path}\n"
    given = run_here("run", "-e", "HOME=/elsewhere", "--", "sh", "-c", 'echo "$HOME"', cwd=tmp_path)
    assert given.stdout == "/elsewhere\n"


def test_the_first_ctrl_c_of_run_stops_the_job_and_the_second_kills_it(tmp_path: Path) -> None:
    script = "trap 'echo TERM ignored' TERM; echo $$; while :; do sleep 0.05; done"
    process = subprocess.Popen(
        [WORKER, "run", "--grace", "1m", "--", "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        job_pid = int(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        first = process.stderr.readline()
        assert "stopping job" in first and "SIGKILL after 60s" in first, first
        assert "Ctrl-C again" in first
        assert process.stdout.readline() == "TERM ignored\n"  # it got SIGTERM, and lives on
        assert alive(job_pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 130  # long before the minute of grace
        rest = process.stderr.read()
        assert "killing job" in rest and "Traceback" not in rest, rest
        assert wait_dead(job_pid, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_stop_at_a_terminal_says_what_it_waits_for(server: RealServer) -> None:
    job_id = server.submit("--", "sleep", "30")
    wait_for(lambda: "running" in server.ok("get", job_id), timeout=30, what="it to run")
    status, _, said = run_with_stderr_on_a_terminal(
        [WORKER, "job", "stop", "--grace", "5s", job_id], server.env()
    )
    assert status == 0
    assert f"sent SIGTERM to job {job_id}; waiting up to 5s" in said, said
    # Piped, as in a script: only the outcome, on stdout.
    again = server.submit("--", "sleep", "30")
    piped = server.job("stop", "--grace", "5s", again)
    assert (piped.stdout, piped.stderr) == (f"{again} ended: stopped on request (SIGTERM)\n", "")


def test_shell_completion_completes_commands_and_flags() -> None:
    env = {
        **os.environ,
        "_WORKER_COMPLETE": "bash_complete",
        "COMP_WORDS": "worker jo",
        "COMP_CWORD": "1",
    }
    done = subprocess.run(
        [WORKER], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert "plain,job" in done.stdout.splitlines(), done.stdout
    env.update(COMP_WORDS="worker job tail --std", COMP_CWORD="3")
    done = subprocess.run(
        [WORKER], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert {"plain,--stdout", "plain,--stderr"} <= set(done.stdout.splitlines()), done.stdout
    env.update(_WORKER_COMPLETE="bash_source")
    source = subprocess.run(
        [WORKER], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert "_worker_completion" in source.stdout
