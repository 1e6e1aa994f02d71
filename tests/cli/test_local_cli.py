"""`worker run` and `worker plugins` as a user runs them: a real process, real exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_dead

from worker_core._plugins import DISTRIBUTION

WORKER = str(Path(sys.executable).with_name("worker"))


def worker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WORKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_run_streams_both_streams_and_exits_with_the_jobs_code() -> None:
    done = worker("run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert done.returncode == 3
    assert done.stdout == "out\n"
    assert done.stderr.startswith("err\n")
    assert "exited with code 3" in done.stderr


def test_run_quiet_success_prints_only_the_jobs_output() -> None:
    done = worker("run", "-q", "--", "echo", "hello")
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello\n", "")


def test_bad_input_is_one_line_and_exit_125() -> None:
    cases = {
        ("run", "--", "no-such-command-xyz"): "not found on the job's PATH",
        ("run", "--memory", "64M", "--", "true"): "enable 'cgroups'",
        ("run", "--plugins", "nosuch", "--", "true"): "unknown plugin 'nosuch'",
        ("run", "--cwd", "/no/such/dir", "--", "true"): "does not exist",
    }
    for args, message in cases.items():
        done = worker(*args)
        assert done.returncode == 125, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_job_that_cannot_start_exits_126_with_the_reason() -> None:
    done = worker("run", "--", "/no/such/binary")
    assert done.returncode == 126
    assert "No such file or directory" in done.stderr


def test_ctrl_c_stops_the_job_and_exits_130() -> None:
    proc = subprocess.Popen(
        [WORKER, "run", "--grace", "1", "--", "sh", "-c", "echo $$; exec sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        job_pid = int(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert wait_dead(job_pid, 30), "the job outlived worker run"
    finally:
        proc.kill()
        proc.wait(5)


def test_plugins_lists_builtins_with_their_hooks_and_flags_unknown_names() -> None:
    done = worker("plugins", "--json", "--plugins", "cgroups")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["memory"]["enabled"] and rows["memory"]["default"]
    assert rows["cgroups"]["enabled"] and "pre_spawn" in rows["cgroups"]["hooks"]
    assert not rows["netns"]["enabled"]
    assert rows["cgroups"]["distribution"] == DISTRIBUTION
    bad = worker("plugins", "--plugins", "nosuch")
    assert bad.returncode == 1
    assert "unknown plugin 'nosuch'" in bad.stdout
