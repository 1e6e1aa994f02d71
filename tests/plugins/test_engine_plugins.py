"""Throwaway plugin objects registered with ``Engine(plugins=[obj])``: what each hook sees,
in which order, and what it may change."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import Recorder, proc_stat, wait_until

from worker_core.cli import build_cli
from worker_core.plugin import (
    Action,
    Chunk,
    EndReason,
    Engine,
    ExitResult,
    InvalidSpec,
    Job,
    JobNotFound,
    JobSpec,
    JobState,
    Limits,
    PermissionDenied,
    Principal,
    QueueReason,
    SpawnPlan,
    Stream,
    WorkerError,
    hookimpl,
)
from worker_core.testing import drain, run_job, running_engine
from worker_plugins.memory.jobs import MemoryJobStore
from worker_plugins.memory.output import MemoryOutputStore

ALICE, EVE = Principal("alice"), Principal("eve")


def test_a_plugin_sees_pre_spawn_then_on_output_then_post_exit_in_that_order() -> None:
    recorder = Recorder()
    with running_engine(recorder) as engine:
        job = engine.submit(JobSpec("/bin/sh", args=["-c", "echo out; echo err >&2"]))
        ended = engine.wait(job.id, 5)
    kinds = [k for k in recorder.kinds(job.id) if k != "state"]
    assert kinds[0] == "pre_spawn" and kinds[-1] == "post_exit"
    assert set(kinds[1:-1]) == {"on_output"} and len(kinds) >= 4
    outputs = [v for k, v in recorder.of(job.id) if k == "on_output"]
    assert {(stream, offset) for _, stream, offset, _ in outputs} == {
        (Stream.STDOUT, 0),
        (Stream.STDERR, 0),
    }
    pre_spawn = next(v for k, v in recorder.of(job.id) if k == "pre_spawn")
    assert pre_spawn[1] is JobState.PENDING
    assert ("post_exit", (job.id, 0, None)) in recorder.of(job.id)
    # post_exit comes after the output was read to the end and before the job ENDED.
    events = recorder.of(job.id)
    assert events.index(("post_exit", (job.id, 0, None))) < events.index(
        ("state", (job.id, JobState.ENDED, JobState.RUNNING))
    )
    assert ended.exit_code == 0


class EnvAdder:
    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        plan.env["X"] = "1"
        plan.env["FROM_PLUGIN"] = job.id


def test_pre_spawn_can_add_to_the_jobs_environment_through_the_plan() -> None:
    with running_engine(EnvAdder()) as engine:
        job = engine.submit(JobSpec("env"))
        engine.wait(job.id, 5)
        lines = engine.output(job.id).decode().splitlines()
    assert "X=1" in lines and f"FROM_PLUGIN={job.id}" in lines


class FailingPreSpawn:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.cleaned_up: list[Job] = []

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        raise self.exc

    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        self.cleaned_up.append(job)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (WorkerError("no cgroup for you"), "preparing the job failed: no cgroup for you"),
        (RuntimeError("oops"), "preparing the job failed: RuntimeError: oops"),
    ],
)
def test_a_raising_pre_spawn_fails_the_job_to_start_and_post_exit_still_cleans_up(
    exc: Exception, message: str
) -> None:
    plugin = FailingPreSpawn(exc)
    with running_engine(plugin) as engine:
        job = engine.submit(JobSpec("/bin/true"))
    assert job.end_reason is EndReason.FAILED_TO_START and job.message == message
    assert [j.id for j in plugin.cleaned_up] == [job.id]


class FactReporter:
    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        result.facts["seen_exit_code"] = result.exit_code
        result.facts["had_cpu"] = result.cpu_seconds is not None


class BrokenObserver:
    """Every observer hook raises: the engine logs it and carries on."""

    @hookimpl
    def on_output(self, job: Job, chunk: Any) -> None:
        raise RuntimeError("on_output broke")

    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        raise RuntimeError("post_exit broke")

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        raise RuntimeError("on_state_change broke")


def test_post_exit_facts_are_folded_into_the_final_record_even_beside_a_broken_plugin() -> None:
    with running_engine(FactReporter(), BrokenObserver()) as engine:
        job = engine.submit(JobSpec("/bin/sh", args=["-c", "echo hi; exit 7"]))
        ended = engine.wait(job.id, 5)
        assert engine.output(job.id) == b"hi\n", "the store still got the output"
    assert ended.end_reason is EndReason.EXITED and ended.exit_code == 7
    assert ended.facts["seen_exit_code"] == 7 and ended.facts["had_cpu"] is True
    assert ended.facts["oom_killed"] is False


class SpecChecker:
    """Enforces limits.memory_max (pretends to) and refuses odd commands."""

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> list[str]:
        if spec.command.endswith("false"):
            raise InvalidSpec("command", "this plugin refuses false")
        return ["limits.memory_max"]


def test_validate_spec_claims_fields_and_can_refuse_a_spec() -> None:
    with running_engine(SpecChecker()) as engine:
        job = engine.submit(JobSpec("/bin/true", limits=Limits(memory_max=1 << 30)))
        assert engine.wait(job.id, 5).exit_code == 0
        with pytest.raises(InvalidSpec, match="refuses false"):
            engine.submit(JobSpec("/bin/false"))
        with pytest.raises(InvalidSpec) as info:
            engine.submit(JobSpec("/bin/true", limits=Limits(cpu=1.0)))
        assert info.value.field == "limits.cpu"
        assert len(engine.list()) == 1


class GroupSignaller:
    """Delivers stop signals itself, as the cgroups plugin would."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    @hookimpl
    def signal_job(self, job: Job, signum: int) -> bool:
        self.signals.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signum)  # type: ignore[arg-type]
        return True


def test_signal_job_delivers_the_stop_and_the_kill_of_leftovers_after_exit() -> None:
    plugin = GroupSignaller()
    with running_engine(plugin) as engine:
        job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        stopped = engine.stop(job.id, grace=2)
    assert stopped.end_reason is EndReason.STOPPED and stopped.signal == signal.SIGTERM
    # SIGTERM for the stop, then SIGKILL for anything the job left behind after its exit.
    assert plugin.signals == [signal.SIGTERM, signal.SIGKILL]


class SignalFreezer:
    """Pauses a job itself (as ``cgroups`` does with its freezer), here with SIGSTOP/SIGCONT."""

    def __init__(self) -> None:
        self.asked: list[bool] = []

    @hookimpl
    def freeze_job(self, job: Job, frozen: bool) -> bool:
        self.asked.append(frozen)
        os.killpg(job.pid, signal.SIGSTOP if frozen else signal.SIGCONT)  # type: ignore[arg-type]
        return True


def _stopped(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat.state in {"T", "t"}


def test_freeze_job_pauses_and_resumes_a_job_in_place_of_the_signals() -> None:
    plugin = SignalFreezer()
    with running_engine(plugin) as engine:
        job = engine.submit(JobSpec("/bin/sleep", ("30",)))
        assert job.pid is not None
        assert engine.pause(job.id).state is JobState.PAUSED
        assert wait_until(lambda: _stopped(job.pid), 10), "the plugin's freeze took effect"
        assert engine.resume(job.id).state is JobState.RUNNING
        assert wait_until(lambda: not _stopped(job.pid), 10)
        stopped = engine.stop(job.id, grace=2)
    assert plugin.asked == [True, False]
    assert stopped.end_reason is EndReason.STOPPED


class UsageReporter:
    """Answers ``job_usage`` for the jobs it prepared, as ``cgroups`` does for its own."""

    def __init__(self) -> None:
        self.mine: set[str] = set()
        self.asked: list[str] = []

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        self.mine.add(job.id)

    @hookimpl
    def job_usage(self, job: Job) -> dict[str, int | float] | None:
        self.asked.append(job.id)
        if job.id not in self.mine:
            return None
        return {"cpu_seconds": 1.5, "memory_current": 4096}


def test_job_usage_answers_for_an_active_job_only() -> None:
    plugin = UsageReporter()
    with running_engine(plugin) as engine:
        job = engine.submit(JobSpec("/bin/sleep", ("30",)))
        assert engine.usage(job.id) == {"cpu_seconds": 1.5, "memory_current": 4096}
        engine.stop(job.id, grace=2)
        assert engine.usage(job.id) == {}, "an ended job uses nothing"
    assert plugin.asked == [job.id], "the hook is not asked about a job that has ended"


class Gate:
    """Keeps every job queued while closed."""

    name = "gate"

    def __init__(self) -> None:
        self.open = False
        self.asked = 0

    @hookimpl
    def admit(self, job: Job) -> str | None:
        self.asked += 1
        return None if self.open else "the gate is closed"


class BrokenAdmit:
    name = "broken-admit"

    @hookimpl
    def admit(self, job: Job) -> str | None:
        raise RuntimeError("admission service unreachable")


def test_admit_keeps_a_job_queued_until_every_plugin_agrees(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    with caplog.at_level(logging.ERROR), running_engine(gate, BrokenAdmit()) as engine:
        waiting = engine.submit(JobSpec("/bin/echo", ("at last",)))
        assert waiting.state is JobState.QUEUED
        assert waiting.queue_reason is QueueReason.PLUGIN
        assert gate.asked >= 1, "the broken plugin did not keep the gate from being asked"
        gate.open = True
        # The next scheduling pass (this job ending) asks again, and the queued one starts.
        assert run_job(engine, JobSpec("/bin/true")).exit_code == 0
        ended = engine.wait(waiting.id, timeout=30)
        assert ended.exit_code == 0 and engine.output(waiting.id) == b"at last\n"
    assert any(
        "plugin 'broken-admit': admit raised RuntimeError: admission service unreachable"
        in record.getMessage()
        for record in caplog.records
    ), "a raising admit is logged, naming the plugin, and counts as no answer"


class Lifecycle:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def configure(self, engine: Engine, config: Any) -> None:
        self.calls.append("configure")

    @hookimpl
    def startup(self, engine: Engine) -> None:
        self.calls.append(f"startup jobs={len(engine.list())}")

    @hookimpl
    def shutdown(self, engine: Engine) -> None:
        self.calls.append(f"shutdown running={len(engine.list(states=[JobState.RUNNING]))}")


def test_configure_startup_and_shutdown_fire_once_each_in_order() -> None:
    plugin = Lifecycle()
    engine = Engine([plugin])
    assert plugin.calls == ["configure"]
    with engine:
        assert plugin.calls == ["configure", "startup jobs=0"]
        engine.submit(JobSpec("/bin/sleep", args=["30"]))
    assert plugin.calls == ["configure", "startup jobs=0", "shutdown running=0"]
    engine.close()
    assert len(plugin.calls) == 3, "closing twice fires nothing more"


class RecordingJobStore(MemoryJobStore):
    """A job store that notes what the engine asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[str] = []
        self.updates: list[tuple[str, JobState]] = []
        self.closed = 0
        self._note = threading.Lock()

    def add(self, job: Job) -> Job:
        with self._note:
            self.added.append(job.id)
        return super().add(job)

    def update(self, job: Job) -> None:
        with self._note:
            self.updates.append((job.id, job.state))
        super().update(job)

    def close(self) -> None:
        self.closed += 1
        super().close()


class RecordingOutputStore(MemoryOutputStore):
    """An output store that notes every call the engine makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self._note = threading.Lock()

    def _called(self, what: str, job_id: str) -> None:
        with self._note:
            self.calls.append((what, job_id))

    def open(self, job_id: str) -> None:
        self._called("open", job_id)
        super().open(job_id)

    def append(self, chunk: Chunk) -> int:
        self._called("append", chunk.job_id)
        return super().append(chunk)

    def close(self, job_id: str) -> None:
        self._called("close", job_id)
        super().close(job_id)


class OwnStores:
    """Supplies both stores; the built-in ``memory`` plugin answers only if nobody else does."""

    name = "own-stores"

    def __init__(self) -> None:
        self.jobs = RecordingJobStore()
        self.output = RecordingOutputStore()
        self.asked: list[str] = []

    @hookimpl
    def job_store(self, engine: Engine) -> MemoryJobStore:
        self.asked.append("job_store")
        return self.jobs

    @hookimpl
    def output_store(self, engine: Engine) -> MemoryOutputStore:
        self.asked.append("output_store")
        return self.output


def _memory_plugin_saw_nothing(engine: Engine, job_id: str) -> bool:
    memory = engine.plugin_manager.get_plugin("memory")
    return memory.jobs.get(job_id) is None and memory.output.kept_bytes() == 0


def test_job_store_hook_supplies_the_store_every_record_goes_through() -> None:
    stores = OwnStores()
    with running_engine(stores) as engine:
        assert stores.asked == ["job_store", "output_store"], "each asked once, jobs first"
        job = run_job(engine, JobSpec("/bin/echo", ("kept",)))
        assert stores.jobs.added == [job.id]
        # Every state the job went through was handed to the store, ENDED last.
        states = [state for job_id, state in stores.jobs.updates if job_id == job.id]
        assert states[-1] is JobState.ENDED and JobState.RUNNING in states
        assert stores.jobs.get(job.id) == engine.get(job.id)
        assert [j.id for j in engine.list()] == [job.id]
        assert _memory_plugin_saw_nothing(engine, job.id)
    assert stores.jobs.closed == 1
    assert stores.asked == ["job_store", "output_store"]


def test_output_store_hook_supplies_the_store_followers_read_from() -> None:
    stores = OwnStores()
    with running_engine(stores) as engine:
        job = run_job(engine, JobSpec("/bin/sh", ("-c", "echo stored; echo err >&2")))
        assert drain(engine.follow(job.id)) == {Stream.STDOUT: b"stored\n", Stream.STDERR: b"err\n"}
        assert stores.output.size(job.id) == {Stream.STDOUT: 7, Stream.STDERR: 4}
        calls = [what for what, job_id in stores.output.calls if job_id == job.id]
        # The engine calls the chosen store itself: open at submit, every chunk, close at the end.
        assert calls[0] == "open" and calls[-1] == "close"
        assert set(calls[1:-1]) == {"append"} and len(calls) >= 4
        assert _memory_plugin_saw_nothing(engine, job.id)


def test_register_commands_builds_the_worker_command_line() -> None:
    result = CliRunner().invoke(build_cli(), ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("serve", "job", "run", "plugins"):
        assert command in result.output


# ------------------------------------------------------------------------------------------
# authorization
# ------------------------------------------------------------------------------------------


class OwnJobsOnly:
    """Anyone but eve may submit; a principal reads and stops only its own jobs."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Action]] = []
        self._lock = threading.Lock()

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool | None:
        with self._lock:
            self.asked.append((principal.name, action))
        if action is Action.SUBMIT:
            return principal != EVE
        if job is None:
            return True  # listing in general; each job is checked on its own
        return job.owner == principal


def test_a_denying_authorizer_refuses_submit_hides_others_jobs_and_filters_list() -> None:
    authorizer = OwnJobsOnly()
    with running_engine(authorizer) as engine:
        with pytest.raises(PermissionDenied, match="eve"):
            engine.submit(JobSpec("/bin/true"), principal=EVE)
        assert engine.list() == [], "a refused submit registers nothing"
        job = engine.submit(JobSpec("/bin/sleep", args=["30"]), principal=ALICE)
        mallory = Principal("mallory")
        mine = engine.submit(JobSpec("/bin/true"), principal=mallory)
        for call in (engine.get, engine.wait, engine.follow, engine.stop, engine.watch):
            with pytest.raises(JobNotFound):
                call(job.id, principal=mallory)  # type: ignore[operator]
        assert [j.id for j in engine.list(principal=mallory)] == [mine.id]
        assert [j.id for j in engine.list(principal=ALICE)] == [job.id]
        assert len(engine.list()) == 2, "the trusted library caller sees everything"
        assert engine.get(job.id, principal=ALICE).owner == ALICE
        assert engine.stop(job.id, principal=ALICE, grace=1).end_reason is EndReason.STOPPED
    assert ("alice", Action.STOP) in authorizer.asked


class Abstainer:
    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> None:
        return None


def test_with_an_authorizer_loaded_no_answer_is_a_deny() -> None:
    with running_engine(Abstainer()) as engine:
        with pytest.raises(PermissionDenied):
            engine.submit(JobSpec("/bin/true"), principal=ALICE)
        job = engine.submit(JobSpec("/bin/true"))
        with pytest.raises(JobNotFound):
            engine.get(job.id, principal=ALICE)
        assert engine.list(principal=ALICE) == []


class AuditWrapper:
    def __init__(self) -> None:
        self.seen: list[Action] = []

    @hookimpl(wrapper=True)
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> Any:
        self.seen.append(action)
        return (yield)


def test_with_no_authorizer_every_principal_is_allowed_even_beside_an_audit_wrapper() -> None:
    audit = AuditWrapper()
    with running_engine(audit) as engine:
        job = engine.submit(JobSpec("/bin/echo", args=["ok"]), principal=EVE)
        assert engine.wait(job.id, 5, principal=ALICE).exit_code == 0
        assert engine.get(job.id, principal=ALICE).owner_name == "eve"
        assert [j.id for j in engine.list(principal=ALICE)] == [job.id]
        assert engine.list(owner="eve") == engine.list(principal=EVE)
    assert Action.SUBMIT in audit.seen and Action.READ in audit.seen
