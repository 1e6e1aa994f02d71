"""When the engine or its launcher dies: no job outlives the engine, and a launcher's death is
noticed while its jobs still run (they are LOST) and survived (the next submit starts a new
launcher)."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

from helpers import PY, ForkPath, alive, kill_if_alive, read_lines, running_engine, wait_dead

from worker_core import EndReason, Engine, JobSpec, JobState

SERVER = textwrap.dedent(
    """
    import sys, time
    from worker_core import Engine, JobSpec, hookimpl
    class ForkPath:  # an rlimit only a forked child can apply, for a job named "forked"
        @hookimpl
        def pre_spawn(self, job, plan):
            if job.spec.name == "forked":
                plan.rlimits["RLIMIT_CORE"] = (0, 0)
    engine = Engine([ForkPath()]).start()
    jobs = [engine.submit(JobSpec("/bin/sleep", args=["1000"])) for _ in range(2)]
    jobs.append(engine.submit(JobSpec("/bin/sleep", args=["1000"], cwd="/tmp")))  # in place
    jobs.append(engine.submit(JobSpec("/bin/sleep", args=["1000"], name="forked")))
    launchers = ",".join(str(c.pid) for c in engine._launchers.clients)
    print(launchers, *(job.pid for job in jobs), flush=True)
    time.sleep(60)
    """
)


def test_a_sigkilled_engine_leaves_no_job_behind(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    server = subprocess.Popen([PY, str(script)], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert server.stdout is not None
        first, *rest = server.stdout.readline().split()
        launchers = [int(p) for p in first.split(",")]
        pids = [int(p) for p in rest]
        assert len(pids) == 4 and all(alive(pid) for pid in pids)
    finally:
        server.kill()
        server.wait(5)
    try:
        # The launcher sees the engine's end of its socket close and kills every job (each
        # would sleep 1000 s): the bound is only about the kill happening at all.
        assert all(wait_dead(pid, 30) for pid in pids), "a job outlived its engine"
        assert all(wait_dead(pid, 30) for pid in launchers), "a launcher outlived its engine"
    finally:
        for pid in pids:
            kill_if_alive(pid)


def kill_launchers(engine: Engine) -> list[int]:
    """SIGKILL every launcher the engine runs; their pids."""
    pids = [client.pid for client in engine._launchers.clients]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def test_a_killed_launcher_marks_its_running_jobs_lost_and_the_next_submit_works(
    engine: Engine,
) -> None:
    # The jobs would sleep 300 s: ending LOST well before is the launcher's death noticed.
    jobs = [engine.submit(JobSpec("/bin/sleep", args=["300"])) for _ in range(3)]
    finished = engine.wait(engine.submit(JobSpec("/bin/true")).id, 30)
    old = kill_launchers(engine)
    try:
        for job in jobs:
            lost = engine.wait(job.id, timeout=60)
            assert lost.state is JobState.ENDED and lost.end_reason is EndReason.LOST
            assert "launcher" in lost.message
        assert engine.get(finished.id) == finished, "a finished job's record is not touched"

        again = engine.submit(JobSpec("/bin/echo", args=["again"]))
        assert engine.wait(again.id, 30).end_reason is EndReason.EXITED
        assert engine.output(again.id) == b"again\n"
        assert not {client.pid for client in engine._launchers.clients} & set(old)
    finally:
        for job in jobs:
            kill_if_alive(job.pid)  # type: ignore[arg-type]


def test_a_job_lost_with_its_launcher_is_killed(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["300"]))
    try:
        kill_launchers(engine)
        assert engine.wait(job.id, timeout=60).end_reason is EndReason.LOST
        assert wait_dead(job.pid, 30), "a LOST job is still running"  # type: ignore[arg-type]
    finally:
        kill_if_alive(job.pid)  # type: ignore[arg-type]


def test_a_fork_path_job_dies_with_its_launcher() -> None:
    # Jobs the launcher forked itself carry PR_SET_PDEATHSIG: they die with it.
    with running_engine([ForkPath()]) as engine:
        job = engine.submit(
            JobSpec(PY, args=["-c", "import time; print(1, flush=True); time.sleep(300)"])
        )
        read_lines(engine, job.id, 1)
        try:
            kill_launchers(engine)
            assert wait_dead(job.pid, 30)  # type: ignore[arg-type]
            assert engine.wait(job.id, 60).end_reason is EndReason.LOST
        finally:
            kill_if_alive(job.pid)  # type: ignore[arg-type]


def test_stopping_a_lost_job_returns_its_final_record(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["300"]))
    try:
        kill_launchers(engine)
        lost = engine.wait(job.id, 60)
        assert lost.end_reason is EndReason.LOST
        assert engine.stop(job.id, timeout=30) == lost
    finally:
        kill_if_alive(job.pid)  # type: ignore[arg-type]
