"""What a real ``worker serve`` logs on stderr: one line per call, each denial, each job
event and the start-up summary, as JSON lines or text; per-call lines only with ``-v``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, WORKER, ServeProcess, serve_process, shell
from ops_helpers import json_records, where

from worker_plugins.grpc_transport import worker_pb2 as pb

#: Bound on the server's exit after SIGTERM.
EXIT_TIMEOUT = 30.0

#: An id no job has (well formed: 32 lowercase hex digits).
ABSENT = "0" * 32


def _calls(srv: ServeProcess) -> str:
    """alice submits a job that exits 3; viewer may not submit, nor stop alice's job; alice
    asks for a job that does not exist; then the server stops. The job's id."""
    alice, viewer = srv.stub("alice"), srv.stub("viewer")
    job = alice.Submit(
        pb.SubmitRequest(spec=shell("exit 3"), wait_seconds=20), timeout=RPC_TIMEOUT
    ).job
    assert job.exit_code == 3
    with pytest.raises(grpc.RpcError) as submit:
        viewer.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT)
    assert submit.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as stop:
        viewer.Stop(pb.StopRequest(job_id=job.id), timeout=RPC_TIMEOUT)
    assert stop.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as get:
        alice.Get(pb.GetRequest(job_id=ABSENT), timeout=RPC_TIMEOUT)
    assert get.value.code() is grpc.StatusCode.NOT_FOUND
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(EXIT_TIMEOUT) == 0
    return job.id


def _serve(
    tmp_path: Path, config: Path, *, verbose: bool, env: Mapping[str, str] | None = None
) -> AbstractContextManager[ServeProcess]:
    worker = [*WORKER, "-v"] if verbose else WORKER
    return serve_process(
        tmp_path / "pki", "--plugins", "rbac", "--config", str(config), worker=worker, env=env
    )


def test_json_lines_name_each_call_denial_and_job_event(tmp_path: Path, rbac_config: Path) -> None:
    with _serve(tmp_path, rbac_config, verbose=True, env={"WORKER_LOG_FORMAT": "json"}) as srv:
        job_id = _calls(srv)
    records = json_records(srv.stderr)  # every line of stderr is one JSON object

    [started] = where(records, logger="worker.serve", event="started")
    assert started["level"] == "INFO"
    assert started["listen"] == [{"transport": "grpc", "address": f"127.0.0.1:{srv.port}"}]
    assert {"memory", "grpc", "sqlite", "spool", "rbac"} <= set(started["plugins"])
    assert started["state_dir"] == str(srv.pki.directory / "state")
    assert started["jobs_run_as"]["runas"] is False  # the test launcher turns runas off

    calls = where(records, logger="worker.calls")
    assert all(r["level"] == "INFO" for r in calls)
    assert all(isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0 for r in calls)
    outcomes = [(r["principal"], r["method"], r["job"], r["code"]) for r in calls]
    assert outcomes == [
        ("alice", "Submit", job_id, "OK"),
        ("viewer", "Submit", None, "PERMISSION_DENIED"),
        ("viewer", "Stop", job_id, "PERMISSION_DENIED"),
        ("alice", "Get", ABSENT, "NOT_FOUND"),
    ]

    denials = where(records, logger="worker.authz")
    assert [(r["level"], r["principal"], r["action"], r["job"]) for r in denials] == [
        ("WARNING", "viewer", "submit", None),
        ("WARNING", "viewer", "stop", job_id),
    ]
    assert "may not submit" in denials[0]["reason"]

    events = where(records, logger="worker.jobs", job=job_id)
    assert [r["event"] for r in events] == ["submitted", "started", "ended"]
    submitted, running, ended = events
    assert (submitted["owner"], submitted["command"]) == ("alice", "/bin/sh")
    assert isinstance(running["pid"], int)
    assert (ended["state"], ended["reason"], ended["exit_code"]) == ("ended", "exited", 3)
    # Only one job was ever created: the denied submit left no trace in worker.jobs.
    assert {r["job"] for r in where(records, logger="worker.jobs")} == {job_id}


def test_text_lines_say_the_same_in_words(tmp_path: Path, rbac_config: Path) -> None:
    with _serve(tmp_path, rbac_config, verbose=True) as srv:
        job_id = _calls(srv)
    lines = srv.stderr.splitlines()
    prefix = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "

    def matching(pattern: str) -> list[str]:
        return [line for line in lines if re.search(prefix + pattern, line)]

    ms = r"duration_ms=\d+\.\d$"
    assert matching(rf"INFO worker\.calls: Submit principal=alice job={job_id} code=OK {ms}")
    assert matching(rf"INFO worker\.calls: Submit principal=viewer code=PERMISSION_DENIED {ms}")
    assert matching(rf"INFO worker\.calls: Get principal=alice job={ABSENT} code=NOT_FOUND {ms}")
    assert matching(
        r"WARNING worker\.authz: denied principal=viewer action=submit method=Submit: "
        r"'viewer' may not submit jobs$"
    )
    assert matching(
        rf"WARNING worker\.authz: denied principal=viewer action=stop method=Stop job={job_id}: "
    )
    assert matching(rf"INFO worker\.jobs: job {job_id} submitted by alice: /bin/sh \(\w+\)$")
    assert matching(rf"INFO worker\.jobs: job {job_id} started \(pid \d+\)$")
    assert matching(rf"INFO worker\.jobs: job {job_id} ended: exited, exit code 3$")
    [summary] = [line for line in lines if line.startswith("worker serve: listening on")]
    assert "; jobs run as: " in summary
    assert "; plugins: " in summary


def test_by_default_only_denials_are_logged_not_every_call(
    tmp_path: Path, rbac_config: Path
) -> None:
    with _serve(tmp_path, rbac_config, verbose=False) as srv:
        _calls(srv)
    stderr = srv.stderr
    assert "worker.calls" not in stderr
    assert "worker.jobs" not in stderr
    assert stderr.count("WARNING worker.authz: denied principal=viewer") == 2
    # What a person starting the server reads: the summary, then the shutdown.
    said = [line for line in stderr.splitlines() if line.startswith("worker serve: ")]
    assert said[0].startswith("worker serve: listening on ")
    assert said[-2:] == ["worker serve: stopping every job...", "worker serve: stopped"]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unknown_log_format_is_refused_naming_the_choices(how: str) -> None:
    argv = [*WORKER, "--log-format", "xml", "plugins"] if how == "flag" else [*WORKER, "plugins"]
    env = {"WORKER_LOG_FORMAT": "xml"} if how == "environment" else {}
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 2
    assert "Invalid value for '--log-format'" in done.stderr
    assert "'xml' is not one of 'text', 'json'" in done.stderr
