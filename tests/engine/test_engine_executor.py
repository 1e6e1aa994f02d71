"""The executor seam, with a small executor of the test's own that runs each job as a plain
subprocess on a thread: the engine keeps the records, the output, the scheduler and the stops,
whoever runs the processes. (The real non-local executor, ``slurm``, is tested against a real
cluster in tests/slurm/.)"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import running_engine

from worker_core import Config, EndReason, Engine, EngineSettings, JobSpec, JobState, PluginError
from worker_core.plugin import (
    Ended,
    ExecutorEvents,
    Job,
    Launched,
    LaunchFailed,
    SpawnPlan,
    Stream,
    hookimpl,
)


class ThreadExecutor:
    """Runs jobs with subprocess.Popen; its ids are the processes' pids as text."""

    name = "threads"

    def __init__(self) -> None:
        self.events: ExecutorEvents | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.signals: list[tuple[str, int]] = []
        self.recovered: list[tuple[str, dict[Stream, int]]] = []
        self.recover_answer = False

    @hookimpl
    def executor(self, engine: Engine) -> ThreadExecutor:
        return self

    def start(self, events: ExecutorEvents) -> None:
        self.events = events

    def launch(self, job: Job, plan: SpawnPlan) -> Launched:
        if plan.executable.endswith("refuse-me"):
            raise LaunchFailed("threads: this executor refuses that command")
        proc = subprocess.Popen(
            plan.argv, executable=plan.executable, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.procs[job.id] = proc
        threading.Thread(target=self._follow, args=(job.id, proc), daemon=True).start()
        return Launched(str(proc.pid))

    def _follow(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        assert self.events is not None and proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            self.events.output(job_id, Stream.STDOUT, line)
        err = proc.stderr.read()
        if err:
            self.events.output(job_id, Stream.STDERR, err)
        code = proc.wait(30)
        if code < 0:
            self.events.ended(job_id, Ended(signal=-code, facts={"where": "threads"}))
        else:
            self.events.ended(job_id, Ended(exit_code=code, facts={"where": "threads"}))

    def signal(self, job: Job, signum: int) -> None:
        self.signals.append((job.id, signum))
        proc = self.procs.get(job.id)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    def freeze(self, job: Job, frozen: bool) -> None:
        self.signal(job, signal.SIGSTOP if frozen else signal.SIGCONT)

    def recover(self, job: Job, offsets: Mapping[Stream, int]) -> bool:
        self.recovered.append((job.id, dict(offsets)))
        return self.recover_answer

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_an_executor_runs_the_job_and_the_engine_keeps_record_and_output() -> None:
    executor = ThreadExecutor()
    with running_engine([executor]) as engine:
        job = engine.submit(JobSpec("sh", args=["-c", "echo one; echo two; echo oops >&2; exit 4"]))
        ended = engine.wait(job.id, 30)
        assert ended.end_reason is EndReason.EXITED and ended.exit_code == 4
        assert ended.external_id is not None and ended.pid is None
        assert ended.facts["where"] == "threads"
        assert engine.output(job.id) == b"one\ntwo\n"
        assert engine.output(job.id, Stream.STDERR) == b"oops\n"


def test_stopping_goes_through_the_executor() -> None:
    executor = ThreadExecutor()
    with running_engine([executor]) as engine:
        job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        stopped = engine.stop(job.id, grace=5)
        assert stopped.end_reason is EndReason.STOPPED
        assert (job.id, signal.SIGTERM) in executor.signals
        paused = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        assert engine.pause(paused.id).state is JobState.PAUSED
        assert (paused.id, signal.SIGSTOP) in executor.signals
        engine.resume(paused.id)
        engine.stop(paused.id, grace=0)


def test_a_launch_the_executor_refuses_fails_the_job_to_start() -> None:
    with running_engine([ThreadExecutor()]) as engine:
        job = engine.submit(JobSpec("/bin/sh", args=["-c", "true"], cwd="/"))
        assert engine.wait(job.id, 30).exit_code == 0
        refused = Path("/tmp/refuse-me")
        refused.write_text("#!/bin/sh\n")
        refused.chmod(0o755)
        try:
            job = engine.submit(JobSpec(str(refused)))
            ended = engine.wait(job.id, 30)
        finally:
            refused.unlink()
        assert ended.end_reason is EndReason.FAILED_TO_START
        assert "refuses" in ended.message


def test_plugins_that_confine_local_processes_are_refused_with_another_executor() -> None:
    class LocalOnly:
        local_only = True

        @hookimpl
        def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
            pass

    with pytest.raises(PluginError, match="cannot be used with the 'threads' executor"):
        Engine([ThreadExecutor(), LocalOnly()]).start()


def test_after_a_restart_a_job_the_executor_still_knows_is_followed_again(tmp_path: Path) -> None:
    config = Config(engine=EngineSettings(state_dir=str(tmp_path / "state"), stop_grace=1))
    first = ThreadExecutor()
    engine = Engine(["sqlite", first], config).start()
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
    # Simulate a crash: the records stay as they are (RUNNING), nothing is stopped; the
    # first engine's threads are ended by hand so nothing outlives the test.
    engine._closed = True  # type: ignore[attr-defined]
    engine._close_stores()  # type: ignore[attr-defined]
    first.close()
    engine._pump.close()  # type: ignore[attr-defined, union-attr]
    engine._timers.close()  # type: ignore[attr-defined, union-attr]
    engine._finalizer.shutdown(wait=True)  # type: ignore[attr-defined, union-attr]
    second = ThreadExecutor()
    second.recover_answer = True
    with Engine(["sqlite", second], config) as again:
        assert [r[0] for r in second.recovered] == [job.id]
        assert again.get(job.id).state is JobState.RUNNING
        # Its end arrives as if from the still-running job.
        assert second.events is not None
        second.events.output(job.id, Stream.STDOUT, b"late\n")
        second.events.ended(job.id, Ended(exit_code=0))
        ended = again.wait(job.id, 30)
        assert ended.end_reason is EndReason.EXITED
        assert again.output(job.id) == b"late\n"
    third = ThreadExecutor()
    with Engine(["sqlite", third], config) as after:
        assert third.recovered == [], "an ended job is not recovered"
        assert after.get(job.id).end_reason is EndReason.EXITED


@pytest.mark.parametrize("name", ["netns", "pidns", "mntns", "runas", "cgroups"])
def test_each_built_in_plugin_that_confines_local_processes_says_so(name: str) -> None:
    def subtrees() -> set[Path]:  # what an engine of this process made under worker/
        return set(Path("/sys/fs/cgroup").glob(f"*/worker/run-{os.getpid()}-*"))

    before = subtrees()
    with pytest.raises(PluginError, match=f"plugin '{name}' acts on this host's processes"):
        Engine([ThreadExecutor(), name]).start()
    # The failed start released what the plugins set up when the engine was made.
    assert subtrees() <= before
