"""The durable queue: queued and held jobs survive a graceful restart and a SIGKILL of the
engine's process, and start afterwards in the same order; a begin time that passed while the
engine was down starts the job at once. Real SQLite files, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from worker_core import Config, EndReason, Engine, EngineSettings, JobSpec, JobState
from worker_core.plugin import Job, hookimpl


class Starts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: list[str] = []

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        if job.state is JobState.PENDING:
            with self.lock:
                self.names.append(job.spec.name)


def config(state: Path) -> Config:
    return Config(engine=EngineSettings(state_dir=str(state), max_running=1, stop_grace=1))


def test_a_graceful_restart_keeps_the_queue_and_its_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Engine(["sqlite"], config(state)) as engine:
        blocker = engine.submit(JobSpec("/bin/sleep", args=["30"], name="blocker"))
        queued = [engine.submit(JobSpec("/bin/true", name=f"q{i}")).id for i in range(5)]
        held = engine.submit(JobSpec("/bin/true", name="held", hold=True))
        assert engine.get(queued[0]).state is JobState.QUEUED
    # The running job ended with the shutdown; the waiting ones still wait.
    starts = Starts()
    with Engine(["sqlite", starts], config(state)) as engine:
        assert engine.get(blocker.id).end_reason is EndReason.SHUTDOWN
        assert engine.get(held.id).state is JobState.HELD
        for job_id in queued:
            assert engine.wait(job_id, 60).exit_code == 0
        assert starts.names == [f"q{i}" for i in range(5)]
        engine.release(held.id)
        assert engine.wait(held.id, 60).exit_code == 0


_CRASHING = """
import json, sys, time
from worker_core import Config, Engine, EngineSettings, JobSpec
config = Config(engine=EngineSettings(state_dir=sys.argv[1], max_running=1))
engine = Engine(["sqlite"], config).start()
blocker = engine.submit(JobSpec("/bin/sleep", args=["300"], name="blocker"))
queued = [engine.submit(JobSpec("/bin/true", name=f"q{i}")).id for i in range(4)]
later = engine.submit(JobSpec("/bin/true", name="later", begin_at=time.time() + 2))
print(json.dumps({"blocker": blocker.id, "queued": queued, "later": later.id}), flush=True)
time.sleep(300)
"""


def test_after_a_sigkill_waiting_jobs_start_in_order_and_a_passed_begin_time_at_once(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        ids = json.loads(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    time.sleep(2.5)  # the begin time passes while nothing runs
    starts = Starts()
    with Engine(["sqlite", starts], config(state)) as engine:
        assert engine.get(ids["blocker"]).end_reason is EndReason.LOST
        for job_id in [*ids["queued"], ids["later"]]:
            assert engine.wait(job_id, 60).exit_code == 0
    assert starts.names == ["q0", "q1", "q2", "q3", "later"]
