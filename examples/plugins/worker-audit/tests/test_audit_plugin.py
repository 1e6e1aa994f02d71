"""The ``audit`` plugin through a real engine: run jobs, then read the JSON lines back."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from worker_audit.plugin import AuditLog

from worker_core.plugin import (
    Action,
    ConfigError,
    Engine,
    Job,
    JobSpec,
    PermissionDenied,
    Principal,
    hookimpl,
)
from worker_core.testing import run_job, running_engine

WAIT = 10.0
ALICE, MALLORY = Principal("alice"), Principal("mallory")


def audit_engine(
    path: Path, *plugins: object, **section: Any
) -> contextlib.AbstractContextManager[Engine]:
    """A started engine with ``audit`` writing to ``path`` (and ``plugins`` beside it)."""
    return running_engine(
        "audit", *plugins, config={"plugins": {"audit": {"path": str(path), **section}}}
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def job_lines(path: Path, job_id: str) -> list[dict[str, Any]]:
    """The job's lines, in the order they were written (the engine delivers a job's events in
    the order of its transitions)."""
    return [r for r in read_lines(path) if r["event"] == "job" and r["job"] == job_id]


class DenyMallory:
    """A stand-in authorizer (as ``rbac`` would be): allows everyone but mallory."""

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool:
        return principal.name != "mallory"


def test_a_job_that_exits_pending_running_ended(tmp_path):
    path = tmp_path / "audit.jsonl"
    # Lines are read after close: the ENDED event fires on an engine thread that may still be
    # writing when wait() returns, and close() waits for those threads.
    with audit_engine(path) as engine:
        job = run_job(engine, JobSpec("sh", ("-c", "exit 3"), env={"TOKEN": "secret"}), WAIT)
    lines = job_lines(path, job.id)
    assert [(r["previous"], r["state"]) for r in lines] == [
        (None, "pending"),
        ("pending", "running"),
        ("running", "ended"),
    ]
    submitted, running, ended = lines
    assert submitted["command"] == "sh"
    assert submitted["args"] == ["-c", "exit 3"]
    assert "secret" not in path.read_text()  # the environment is never logged
    assert running["pid"] > 0
    assert ended["end_reason"] == "exited"
    assert ended["exit_code"] == 3
    assert ended["signal"] is None
    assert "cpu_seconds" in ended["facts"]
    assert all(r["time"].endswith("+00:00") for r in lines)


def test_a_stopped_job_goes_through_stopping(tmp_path):
    path = tmp_path / "audit.jsonl"
    with audit_engine(path) as engine:
        job = engine.submit(JobSpec("sleep", ("30",)))
        # Flushed at once: the RUNNING line is on disk by the time submit() returns.
        assert [r["state"] for r in job_lines(path, job.id)] == ["pending", "running"]
        engine.stop(job.id, grace=5.0)
    lines = job_lines(path, job.id)
    assert [r["state"] for r in lines] == ["pending", "running", "stopping", "ended"]
    assert lines[-1]["end_reason"] == "stopped"
    assert lines[-1]["signal"] == signal.SIGTERM


def test_a_job_that_fails_to_start(tmp_path):
    path = tmp_path / "audit.jsonl"
    with audit_engine(path) as engine:
        job = engine.submit(JobSpec("/nonexistent/program"))
    lines = job_lines(path, job.id)
    assert [r["state"] for r in lines] == ["pending", "ended"]
    assert lines[-1]["end_reason"] == "failed_to_start"
    assert "No such file" in lines[-1]["message"]


def test_startup_and_shutdown_are_recorded(tmp_path):
    path = tmp_path / "audit.jsonl"
    with audit_engine(path):
        pass
    lines = read_lines(path)
    assert [r["event"] for r in lines] == ["startup", "shutdown"]
    assert {"audit", "memory"} <= set(lines[0]["plugins"])


def test_authorization_decisions_are_recorded(tmp_path):
    path = tmp_path / "audit.jsonl"
    with audit_engine(path, DenyMallory()) as engine:
        job = run_job(engine, JobSpec("true"), WAIT, principal=ALICE)
        with pytest.raises(PermissionDenied):
            engine.submit(JobSpec("true"), principal=MALLORY)
        assert engine.list(principal=MALLORY) == []
    decisions = [r for r in read_lines(path) if r["event"] == "authorize"]
    first = decisions[0]
    assert first["principal"] == "alice"
    assert first["action"] == "submit"
    assert first["job"] == job.id
    assert first["command"] == "true"
    assert first["decision"] == "allow"
    assert first["answers"] == {"allow": 1, "deny": 0, "abstain": 0}
    assert ("alice", "read", "allow") in {
        (r["principal"], r["action"], r["decision"]) for r in decisions
    }
    denied = [r for r in decisions if r["principal"] == "mallory"]
    assert [(r["action"], r["decision"]) for r in denied] == [("submit", "deny"), ("read", "deny")]
    assert denied[0]["answers"] == {"allow": 0, "deny": 1, "abstain": 0}
    assert denied[1]["job"] is None  # a listing as such, before any job is looked at


class Broken:
    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool:
        raise RuntimeError("policy store unreachable")


def test_an_authorizer_that_raises_is_recorded_and_the_error_propagates(tmp_path):
    path = tmp_path / "audit.jsonl"
    with audit_engine(path, Broken()) as engine, pytest.raises(RuntimeError):
        engine.submit(JobSpec("true"), principal=ALICE)
    (decision,) = [r for r in read_lines(path) if r["event"] == "authorize"]
    assert decision["decision"] == "error"
    assert "policy store unreachable" in decision["error"]


def test_alone_it_does_not_change_any_decision(tmp_path):
    with audit_engine(tmp_path / "audit.jsonl") as engine:
        assert run_job(engine, JobSpec("true"), WAIT, principal=ALICE).exit_code == 0


def test_fsync_mode_writes_the_same_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    with audit_engine(path, fsync=True) as engine:
        job = run_job(engine, JobSpec("true"), WAIT)
    assert [r["state"] for r in job_lines(path, job.id)] == ["pending", "running", "ended"]


def test_concurrent_writers_never_interleave(tmp_path):
    audit_log = AuditLog(tmp_path / "audit.jsonl")
    payload = "x" * 10_000  # well past any single write() the OS might split

    def writer(n: int) -> None:
        for i in range(200):
            audit_log.write({"writer": n, "i": i, "payload": payload})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
        assert not t.is_alive()
    audit_log.close()
    lines = read_lines(tmp_path / "audit.jsonl")
    assert len(lines) == 8 * 200
    for n in range(8):
        assert [r["i"] for r in lines if r["writer"] == n] == list(range(200))


def test_a_write_after_close_is_kept(tmp_path):
    audit_log = AuditLog(tmp_path / "audit.jsonl")
    audit_log.write({"n": 1})
    audit_log.close()
    audit_log.write({"n": 2})  # a job that ended after the engine's shutdown wait
    assert [r["n"] for r in read_lines(tmp_path / "audit.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, r"required field missing @ \$.plugins.audit.path"),
        ({"path": "/nonexistent/dir/audit.jsonl"}, r"cannot open .* @ \$.plugins.audit.path"),
        ({"path": "a.jsonl", "rotate": True}, r"extra fields found \(rotate\) @ \$.plugins.audit"),
    ],
)
def test_configuration_errors_name_the_key(section, message):
    with (
        pytest.raises(ConfigError, match=message),
        running_engine("audit", config={"plugins": {"audit": section}}),
    ):
        pass
