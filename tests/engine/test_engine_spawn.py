"""The spawn path as a job sees it (descriptors, environment) and how starts fail.

A start failure the kernel decides (no such file, permission denied, bad cwd) is a job that
ENDED in FAILED_TO_START with the reason; bad input the engine can check is InvalidSpec at
submit, leaving no job and no process behind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PY, ForkPath, Recorder, proc_status, read_lines, running_engine

from worker_core import (
    EndReason,
    Engine,
    InvalidSpec,
    IOLimit,
    Isolation,
    JobSpec,
    JobState,
    Limits,
    PluginError,
)
from worker_core._validation import DEFAULT_PATH


def launcher_children(engine: Engine) -> list[int]:
    children = []
    for client in engine._launchers.clients:
        pid = client.pid
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        children.extend(int(p) for p in text.split())
    return children


# Says when it is past its own start-up (the dynamic loader briefly holds libc open).
READY_THEN_SLEEP = "import time; print('ready', flush=True); time.sleep(5)"


#: The launcher's three ways to start a job: posix_spawn; posix_spawn from the job's working
#: directory (the launcher steps into it and back); fork, the plan applied in the child.
SPAWN_PATHS = pytest.mark.parametrize(
    ("forked", "cwd"),
    [(False, "/"), (False, "/tmp"), (True, "/tmp")],
    ids=["posix_spawn", "posix_spawn in place", "fork"],
)


@pytest.fixture
def path_engine(forked: bool) -> Iterator[Engine]:
    with running_engine([ForkPath()] if forked else []) as engine:
        yield engine


@SPAWN_PATHS
def test_a_job_has_only_descriptors_0_1_2_open(path_engine: Engine, cwd: str) -> None:
    engine = path_engine
    job = engine.submit(JobSpec(PY, args=["-c", READY_THEN_SLEEP], cwd=cwd))
    try:
        read_lines(engine, job.id, 1)
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{job.pid}/fd"))
        assert fds == [0, 1, 2]
        assert os.readlink(f"/proc/{job.pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{job.pid}/fd/1").startswith("pipe:")
        assert os.readlink(f"/proc/{job.pid}/fd/2").startswith("pipe:")
        assert os.readlink(f"/proc/{job.pid}/cwd") == cwd
    finally:
        engine.stop(job.id, grace=1)


def test_a_job_runs_in_its_own_session_and_process_group(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["5"]))
    try:
        assert job.pid is not None
        assert os.getsid(job.pid) == job.pid and os.getpgid(job.pid) == job.pid
    finally:
        engine.stop(job.id, grace=1)


def test_a_job_sees_none_of_the_servers_environment(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_TEST_SERVER_SECRET", "leak")
    monkeypatch.setenv("PATH", "/server/only/bin:" + os.environ.get("PATH", ""))
    job = engine.submit(JobSpec("env", env={"GREETING": "hello world", "EMPTY": ""}))
    assert engine.wait(job.id, 5).exit_code == 0
    env = dict(line.split("=", 1) for line in engine.output(job.id).decode().splitlines())
    assert "WORKER_TEST_SERVER_SECRET" not in env
    assert env.pop("PATH") == DEFAULT_PATH
    assert env.pop("WORKER_JOB_ID") == job.id
    assert env == {"GREETING": "hello world", "EMPTY": ""}


def test_a_spec_path_replaces_the_default_and_is_where_the_command_is_found(
    engine: Engine, tmp_path: Path
) -> None:
    tool = tmp_path / "only-here"
    tool.write_text('#!/bin/sh\necho found "$PATH"\n')
    tool.chmod(0o755)
    path = f"{tmp_path}:/usr/bin:/bin"
    job = engine.submit(JobSpec("only-here", env={"PATH": path}))
    assert engine.wait(job.id, 5).exit_code == 0
    assert engine.output(job.id) == f"found {path}\n".encode()


def signal_masks(pid: int) -> tuple[int, int]:
    status = proc_status(pid)
    assert status is not None, f"job {pid} is gone"
    return int(status["SigBlk"], 16), int(status["SigIgn"], 16)


@SPAWN_PATHS
def test_no_signal_is_blocked_or_ignored_in_the_job(path_engine: Engine, cwd: str) -> None:
    engine = path_engine
    job = engine.submit(JobSpec("/bin/sleep", args=["5"], cwd=cwd))
    try:
        blocked, ignored = signal_masks(job.pid)  # type: ignore[arg-type]
        assert blocked == 0
        # Standard signals only: glibc's posix_spawn leaves its two internal real-time signals
        # (32, 33) ignored in the child; every glibc or musl program reinstalls them at start.
        assert ignored & 0x7FFF_FFFF == 0, f"SigIgn {ignored:#x}"
    finally:
        engine.stop(job.id, grace=1)


# ------------------------------------------------------------------------------------------
# failures the kernel decides: a job that ENDED in FAILED_TO_START
# ------------------------------------------------------------------------------------------


def assert_failed_to_start(engine: Engine, recorder: Recorder, spec: JobSpec, reason: str) -> None:
    job = engine.submit(spec)
    assert job.state is JobState.ENDED, "a start failure is known when submit returns"
    assert job.end_reason is EndReason.FAILED_TO_START
    assert reason in job.message, job.message
    assert job.pid is None and job.exit_code is None
    assert engine.get(job.id) == job
    assert recorder.states(job.id) == [JobState.PENDING, JobState.ENDED]
    assert "post_exit" in recorder.kinds(job.id), "post_exit runs so plugins can clean up"


def test_an_absolute_command_that_does_not_exist_fails_to_start(
    engine: Engine, recorder: Recorder
) -> None:
    spec = JobSpec("/nonexistent/bin/tool")
    assert_failed_to_start(engine, recorder, spec, "No such file or directory")


def test_a_file_without_execute_permission_fails_to_start(
    engine: Engine, recorder: Recorder, tmp_path: Path
) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert_failed_to_start(engine, recorder, JobSpec(str(script)), "Permission denied")


def test_a_cwd_that_is_a_file_fails_to_start_with_not_a_directory(
    engine: Engine, recorder: Recorder, tmp_path: Path
) -> None:
    afile = tmp_path / "file"
    afile.write_text("")
    spec = JobSpec("/bin/true", cwd=str(afile))
    assert_failed_to_start(engine, recorder, spec, "Not a directory")


def test_a_directory_as_command_fails_to_start(engine: Engine, recorder: Recorder) -> None:
    assert_failed_to_start(engine, recorder, JobSpec("/tmp"), "Permission denied")


# ------------------------------------------------------------------------------------------
# bad input: InvalidSpec at submit, nothing left behind
# ------------------------------------------------------------------------------------------

INVALID = [
    pytest.param(JobSpec(""), "command", id="empty command"),
    pytest.param(JobSpec("/bin/e\0cho"), "command", id="NUL in command"),
    pytest.param(JobSpec("/bin/echo", args=["ok", "b\0d"]), "args[1]", id="NUL in args"),
    pytest.param(JobSpec("/bin/true", env={"A": "x\0y"}), "env['A']", id="NUL in env value"),
    pytest.param(JobSpec("/bin/true", env={"A\0B": "x"}), "env['A\\x00B']", id="NUL in env name"),
    pytest.param(JobSpec("/bin/true", env={"A=B": "x"}), "env['A=B']", id="= in env name"),
    pytest.param(JobSpec("no-such-tool-here"), "command", id="not on the job's PATH"),
    pytest.param(
        JobSpec("python3", env={"PATH": "/nonexistent"}), "command", id="not on the spec's PATH"
    ),
    pytest.param(JobSpec("/bin/true", cwd="/nonexistent/dir"), "cwd", id="cwd does not exist"),
    pytest.param(JobSpec("/bin/true", cwd="relative"), "cwd", id="relative cwd"),
    pytest.param(
        JobSpec("/bin/true", limits=Limits(memory_max=1 << 20)),
        "limits.memory_max",
        id="limit with no enforcing plugin",
    ),
    pytest.param(
        JobSpec("/bin/true", limits=Limits(io=[IOLimit("8:0", read_bps=1)])),
        "limits.io",
        id="io limit with no enforcing plugin",
    ),
    pytest.param(
        JobSpec("/bin/true", isolation=Isolation(uid=1000)),
        "isolation.uid",
        id="uid with no enforcing plugin",
    ),
    pytest.param(
        JobSpec("/bin/true", options={"nosuch.key": "1"}),
        "options.nosuch.key",
        id="option of a plugin not enabled",
    ),
]


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_bad_input_raises_invalid_spec_naming_the_field_and_leaves_nothing(
    engine: Engine, recorder: Recorder, spec: JobSpec, field: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        engine.submit(spec)
    assert info.value.field == field
    assert engine.list() == []
    assert recorder.events == [], "no job was registered, so no hook saw one"
    assert launcher_children(engine) == []


def test_an_oversized_spec_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidSpec, match="limit is"):
        engine.submit(JobSpec("/bin/true", args=["x" * (2 << 20)]))
    assert engine.list() == []


def test_limits_cannot_even_be_built_with_zero_or_negative_values() -> None:
    with pytest.raises(InvalidSpec, match=r"limits\.memory_max: must be positive"):
        Limits(memory_max=0)
    with pytest.raises(InvalidSpec, match=r"limits\.pids_max: must be positive"):
        Limits(pids_max=-5)


def test_a_spec_that_is_not_a_jobspec_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidSpec, match="must be a JobSpec"):
        engine.submit({"command": "/bin/true"})  # type: ignore[arg-type]


def test_an_unknown_plugin_name_is_a_plugin_error_naming_it() -> None:
    with pytest.raises(PluginError, match="'no-such-plugin'"):
        Engine("memory,no-such-plugin")


def test_the_job_can_read_what_it_printed_before_a_failure_elsewhere(engine: Engine) -> None:
    # A failed start of one job does not disturb another running alongside.
    running = engine.submit(JobSpec("/bin/sh", args=["-c", "echo up; sleep 5"]))
    failed = engine.submit(JobSpec("/nonexistent"))
    assert failed.end_reason is EndReason.FAILED_TO_START
    assert read_lines(engine, running.id, 1) == ["up"]
    assert engine.stop(running.id, grace=1).end_reason is EndReason.STOPPED
