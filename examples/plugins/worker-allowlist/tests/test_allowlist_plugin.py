"""The ``allowlist`` plugin through a real engine, with principals."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from worker_core.plugin import (
    Action,
    ConfigError,
    EndReason,
    Engine,
    Job,
    JobSpec,
    JobState,
    PermissionDenied,
    Principal,
    SpawnPlan,
    hookimpl,
)
from worker_core.testing import run_job, running_engine

WAIT = 10.0
ALICE, BOB = Principal("alice"), Principal("bob")
RULES = {"*": ["true"], "alice": ["echo", "sleep"]}


def allowlist_engine_with(
    *plugins: object, **section: Any
) -> contextlib.AbstractContextManager[Engine]:
    """A started engine with ``allowlist`` (:data:`RULES` and ``section``) and ``plugins``."""
    return running_engine(
        "allowlist", *plugins, config={"plugins": {"allowlist": {"rules": RULES, **section}}}
    )


@pytest.fixture
def allowlist_engine() -> Iterator[Engine]:
    """The plugin alone, answering True to what it does not deny."""
    with allowlist_engine_with(allow_others=True) as engine:
        yield engine


class AllowAll:
    """Stands in for an allowing authorizer such as ``rbac``."""

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool:
        return True


def submit_and_wait(
    engine: Engine, principal: Principal, command: str, *args: str, **spec: Any
) -> Job:
    return run_job(engine, JobSpec(command, args, **spec), WAIT, principal=principal)


def test_a_listed_command_runs(allowlist_engine):
    job = submit_and_wait(allowlist_engine, ALICE, "echo", "hi")
    assert job.exit_code == 0
    assert allowlist_engine.output(job.id) == b"hi\n"


def test_everyone_gets_the_star_rule(allowlist_engine):
    assert submit_and_wait(allowlist_engine, BOB, "true").exit_code == 0
    assert submit_and_wait(allowlist_engine, ALICE, "true").exit_code == 0


@pytest.mark.parametrize(("principal", "command"), [(BOB, "echo"), (ALICE, "cat"), (BOB, "sh")])
def test_an_unlisted_command_is_denied_and_nothing_is_registered(
    allowlist_engine, principal, command
):
    with pytest.raises(PermissionDenied):
        allowlist_engine.submit(JobSpec(command, ("x",)), principal=principal)
    assert allowlist_engine.list() == []


def test_an_absolute_path_to_the_same_file_is_the_same_program(allowlist_engine):
    echo = os.path.realpath("/usr/bin/echo")
    for command in ("/usr/bin/echo", "/bin/echo", echo):
        assert submit_and_wait(allowlist_engine, ALICE, command, "x").exit_code == 0


def test_a_lookalike_on_the_jobs_own_path_is_denied(allowlist_engine, tmp_path):
    fake = tmp_path / "echo"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(PermissionDenied):
        allowlist_engine.submit(
            JobSpec("echo", ("x",), env={"PATH": str(tmp_path)}), principal=ALICE
        )
    assert allowlist_engine.list() == []


def test_an_allowed_file_under_another_name_is_denied(allowlist_engine, tmp_path):
    # Multi-call binaries decide what to do from argv[0]: the name is part of the program.
    alias = tmp_path / "notecho"
    alias.symlink_to("/usr/bin/echo")
    with pytest.raises(PermissionDenied):
        allowlist_engine.submit(JobSpec(str(alias), ("x",)), principal=ALICE)


def test_reads_and_stops_are_left_alone(allowlist_engine):
    job = allowlist_engine.submit(JobSpec("sleep", ("30",)), principal=ALICE)
    assert allowlist_engine.get(job.id, principal=BOB).id == job.id
    stopped = allowlist_engine.stop(job.id, principal=ALICE, grace=5.0)
    assert stopped.end_reason is EndReason.STOPPED


def test_the_trusted_library_caller_is_not_checked(allowlist_engine):
    assert run_job(allowlist_engine, JobSpec("cat", ("/dev/null",)), WAIT).exit_code == 0


def test_alone_without_allow_others_it_denies_everything():
    # With an authorizer loaded, a call nobody answers True is a deny; this plugin abstains.
    with allowlist_engine_with() as engine, pytest.raises(PermissionDenied):
        engine.submit(JobSpec("echo", ("x",)), principal=ALICE)


def test_it_narrows_what_an_allowing_authorizer_allows():
    with allowlist_engine_with(AllowAll()) as engine:
        assert submit_and_wait(engine, ALICE, "echo", "x").exit_code == 0
        with pytest.raises(PermissionDenied):  # any deny wins
            engine.submit(JobSpec("cat", ("/dev/null",)), principal=ALICE)
        assert [job.spec.command for job in engine.list(principal=ALICE)] == ["echo"]


class _SwapExecutable:
    """Makes the plan exec something other than what was authorized (a PATH race, simulated)."""

    @hookimpl(tryfirst=True)
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        plan.executable = "/usr/bin/cat"


def test_what_is_really_execd_is_checked_again():
    with allowlist_engine_with(_SwapExecutable(), allow_others=True) as engine:
        job = run_job(engine, JobSpec("echo", ("x",)), WAIT, principal=ALICE)
        assert job.state is JobState.ENDED
        assert job.end_reason is EndReason.FAILED_TO_START
        assert "may not run '/usr/bin/cat' (allowlist)" in job.message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"rules": {"alice": "echo"}},
            r"must be a list of commands.* @ \$.plugins.allowlist.rules.alice",
        ),
        (
            {"rules": {"bob": ["no-such-command-here"]}},
            r"is not on the standard PATH .* @ \$.plugins.allowlist.rules.bob",
        ),
        (
            {"rules": {"bob": ["bin/echo"]}},
            r"use a bare name or an absolute path @ \$.plugins.allowlist.rules.bob",
        ),
        ({"rules": {"bob": ["/no/such/file"]}}, r"does not exist @ \$.plugins.allowlist.rules.bob"),
        (
            {"allow_everything": True},
            r"extra fields found \(allow_everything\) @ \$.plugins.allowlist",
        ),
    ],
)
def test_configuration_errors_name_the_key(section, message):
    with (
        pytest.raises(ConfigError, match=message),
        running_engine("allowlist", config={"plugins": {"allowlist": section}}),
    ):
        pass
