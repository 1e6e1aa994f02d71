"""Fault injection at the engine level: crashes, misbehaving jobs, racing stops.

Each test asserts what an operator would check afterwards: which processes are alive, what
the job record says, whether a follower returned.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import alive, read_pid_line, wait_dead

from worker_core import Config, EndReason, Engine, JobSpec, JobState

PY = sys.executable


@pytest.fixture
def cgroup_config() -> Config:
    return Config.from_mapping(
        {"plugins": {"cgroups": {"parent": f"worker-test-{uuid.uuid4().hex[:8]}"}}}
    )


def daemonizing_job(main_seconds: float) -> str:
    """A job that double-forks a daemon (new session, prints its pid, sleeps a minute) and
    whose main process exits after ``main_seconds``."""
    return textwrap.dedent(
        f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                print(os.getpid(), flush=True)
                time.sleep(60)
            os._exit(0)
        time.sleep({main_seconds})
        """
    )


DAEMONIZE = daemonizing_job(60)


def remove_cgroup_parent(parent: str) -> None:
    for directory in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
        directory.rmdir()


def test_engine_killed_with_sigkill_leaves_no_job_and_restart_cleans_its_cgroups(
    cgroup_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parent = cgroup_config.plugins["cgroups"]["parent"]
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from worker_core import Config, Engine, JobSpec
            config = Config.from_mapping({{"plugins": {{"cgroups": {{"parent": {parent!r}}}}}}})
            engine = Engine(["cgroups"], config).start()
            job = engine.submit(JobSpec({PY!r}, args=["-c", {DAEMONIZE!r}]))
            while not engine.output(job.id).endswith(b"\\n"):
                time.sleep(0.01)
            print(job.pid, job.id, engine.output(job.id).decode().strip(), flush=True)
            time.sleep(60)
            """
        )
    )
    server = subprocess.Popen([PY, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        main_pid, job_id, daemon_pid = server.stdout.readline().split()
        assert alive(int(main_pid)) and alive(int(daemon_pid))
    finally:
        server.kill()
        server.wait(5)
    # The launcher sees the engine's socket close and kills every job, daemons included.
    assert wait_dead(int(main_pid)), "the job outlived its engine"
    assert wait_dead(int(daemon_pid)), "a daemonized grandchild outlived its engine"
    leftover = Path(f"/sys/fs/cgroup/pids/{parent}/{job_id}")
    assert leftover.exists(), "the crashed engine could not remove its cgroup (the restart must)"
    try:
        with (
            caplog.at_level(logging.WARNING, logger="worker.cgroups"),
            Engine(["cgroups"], cgroup_config),
        ):
            assert not leftover.exists()
    finally:
        remove_cgroup_parent(
            parent
        )  # created by the crashed engine, so not the restart's to remove
    assert any(
        job_id in record.getMessage() and "leftover" in record.getMessage()
        for record in caplog.records
    )


def test_job_that_closes_stdout_early_keeps_running_and_ends_with_its_own_status(
    engine: Engine,
) -> None:
    job = engine.submit(
        JobSpec(
            PY,
            args=[
                "-c",
                "import os, time; print('bye', flush=True); os.close(1); os.close(2); "
                "time.sleep(0.5); raise SystemExit(4)",
            ],
        )
    )
    chunks = list(engine.follow(job.id))
    ended = engine.wait(job.id, timeout=10)
    assert b"".join(c.data for c in chunks) == b"bye\n"
    assert ended.end_reason is EndReason.EXITED and ended.exit_code == 4
    assert ended.ended_at is not None and ended.started_at is not None
    # It slept 0.5 s after closing its pipes (a busy host can only make that longer).
    assert ended.ended_at - ended.started_at >= 0.4, (
        "the job must not be declared ended when its pipes close"
    )


def test_grandchild_holding_the_pipe_does_not_keep_the_job_or_its_followers_alive(
    engine: Engine,
) -> None:
    # Without cgroups a setsid'd grandchild escapes the job's process group: the job still ends
    # when its main process exits, the follower ends after the output linger, and stopping the
    # escapee is the cgroups plugin's job (tested below).
    job = engine.submit(JobSpec(PY, args=["-c", daemonizing_job(0.2)]))
    daemon_pid = read_pid_line(engine, job.id)
    follower = engine.follow(job.id)
    # The grandchild holds the pipe for 60 s; the follower must end long before.
    deadline = time.monotonic() + 30
    chunks = []
    while (batch := follower.read(timeout=5)) is not None:
        chunks.extend(batch)
        assert time.monotonic() < deadline, "tail -f would hang on a pipe held by a grandchild"
    assert alive(daemon_pid), "the follower ended only when the grandchild let go of the pipe"
    ended = engine.wait(job.id, timeout=30)
    assert ended.state is JobState.ENDED and ended.end_reason is EndReason.EXITED
    os.kill(daemon_pid, signal.SIGKILL)
    assert wait_dead(daemon_pid)


def test_with_cgroups_a_daemonized_grandchild_dies_when_the_job_exits(
    cgroup_config: Config,
) -> None:
    with Engine(["cgroups"], cgroup_config) as engine:
        job = engine.submit(JobSpec(PY, args=["-c", daemonizing_job(0.3)]))
        daemon_pid = read_pid_line(engine, job.id)
        ended = engine.wait(job.id, timeout=10)
        assert ended.end_reason is EndReason.EXITED and ended.exit_code == 0
        assert wait_dead(daemon_pid), "the job's cgroup must be emptied when its main process exits"


def test_many_concurrent_stops_agree_on_one_final_record(engine: Engine) -> None:
    job = engine.submit(JobSpec("sh", args=["-c", "trap '' TERM; echo $$; sleep 30"]))
    read_pid_line(engine, job.id)  # the trap is set
    results: list[object] = []
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            results.append(engine.stop(job.id, grace=0.3))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stop) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(results) == 16
    assert len({(r.state, r.end_reason, r.signal, r.ended_at) for r in results}) == 1  # type: ignore[attr-defined]
    final = results[0]
    assert final.end_reason is EndReason.STOPPED and final.signal == signal.SIGKILL  # type: ignore[attr-defined]


def test_stop_right_after_submit_and_after_exit(engine: Engine) -> None:
    for _ in range(20):
        job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        stopped = engine.stop(job.id, grace=1)
        assert stopped.end_reason is EndReason.STOPPED
        assert stopped.pid is not None and wait_dead(stopped.pid, 1)
    done = engine.wait(engine.submit(JobSpec("/bin/true")).id, timeout=5)
    assert engine.stop(done.id) == done, (
        "stopping a finished job returns its final record unchanged"
    )
