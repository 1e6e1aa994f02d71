"""Throwaway plugin objects registered with ``Engine(plugins=[obj])``: what each hook sees,
in which order, and what it may change."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import Recorder, drain, joined, running_engine

from worker_core.cli import build_cli
from worker_core.plugin import (
    Action,
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
    SpawnPlan,
    Stream,
    WorkerError,
    hookimpl,
)
from worker_plugins.memory_store import MemoryOutputStore

ALICE, EVE = Principal("alice"), Principal("eve")


def test_a_plugin_sees_pre_spawn_then_on_output_then_post_exit_in_that_order() -> None:
    recorder = Recorder()
    with running_engine([recorder]) as engine:
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
    with running_engine([EnvAdder()]) as engine:
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
    with running_engine([plugin]) as engine:
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
    with running_engine([FactReporter(), BrokenObserver()]) as engine:
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
    with running_engine([SpecChecker()]) as engine:
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
    with running_engine([plugin]) as engine:
        job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        stopped = engine.stop(job.id, grace=2)
    assert stopped.end_reason is EndReason.STOPPED and stopped.signal == signal.SIGTERM
    # SIGTERM for the stop, then SIGKILL for anything the job left behind after its exit.
    assert plugin.signals == [signal.SIGTERM, signal.SIGKILL]


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


class OwnStore(MemoryOutputStore):
    """A replacement output store (the default one disabled with ``no:memory``)."""

    name = "own-store"
    served = 0

    @hookimpl
    def output_store(self) -> MemoryOutputStore:
        OwnStore.served += 1
        return self


def test_output_store_hook_supplies_the_store_followers_read_from() -> None:
    store = OwnStore()
    with running_engine(["no:memory", store]) as engine:
        assert not engine.plugin_manager.has_plugin("memory")
        job = engine.submit(JobSpec("/bin/echo", args=["stored"]))
        assert joined(drain(engine.follow(job.id)), Stream.STDOUT) == b"stored\n"
        assert store.size(job.id)[Stream.STDOUT] == len(b"stored\n")
    assert OwnStore.served == 1


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
    with running_engine([authorizer]) as engine:
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
    with running_engine([Abstainer()]) as engine:
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
    with running_engine([audit]) as engine:
        job = engine.submit(JobSpec("/bin/echo", args=["ok"]), principal=EVE)
        assert engine.wait(job.id, 5, principal=ALICE).exit_code == 0
        assert engine.get(job.id, principal=ALICE).owner_name == "eve"
        assert [j.id for j in engine.list(principal=ALICE)] == [job.id]
        assert engine.list(owner="eve") == engine.list(principal=EVE)
    assert Action.SUBMIT in audit.seen and Action.READ in audit.seen
