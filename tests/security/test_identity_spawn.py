"""How an unprivileged job is started: from a restricted launcher, with its identity switched
by subprocess's fork in C, and nothing more than the fork path would give it.

A plan with ``no_new_privileges`` and ``capabilities = set()`` (every job runas starts
unprivileged) goes to a launcher that emptied its own bounding and inheritable sets and set
no_new_privs once at start; its children inherit that instead of each running Python to
apply it. These tests look at what the job and the launchers really hold (``/proc``), and at
the two things the child no longer checks itself: a directory and a program the job's user
may not use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import proc_status, running_engine

from worker_core import EndReason, Engine, Job, JobSpec, Principal, Stream

ALICE = Principal("alice")
NOBODY = 65534

#: The lines of /proc/self/status that say who a process is and what it holds.
FIELDS = ("Uid", "Gid", "Groups", "SigBlk", "SigIgn", "CapInh", "CapPrm", "CapEff", "CapBnd")
FIELDS += ("CapAmb", "NoNewPrivs")
STATUS = "grep -E '^({})' /proc/self/status | tr -d ' \\t'".format("|".join(FIELDS))


def status_of(text: str) -> dict[str, str]:
    """``Name:value`` lines (blanks removed) as a mapping."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: v.strip().replace("\t", "") for k, v in fields.items() if k in FIELDS}


def process_status(pid: int) -> dict[str, str]:
    status = proc_status(pid)
    assert status is not None, f"process {pid} is gone"
    return status


def run(engine: Engine, script: str, **spec: object) -> Job:
    job = engine.submit(JobSpec("/bin/sh", args=["-c", script], **spec), ALICE)  # type: ignore[arg-type]
    ended = engine.wait(job.id, timeout=30)
    assert ended.is_finished, ended
    return ended


@pytest.fixture
def closed_dir() -> Iterator[Path]:
    """A directory only root may enter, holding a program only root may run."""
    path = Path(tempfile.mkdtemp(prefix="worker-test-closed-", dir="/tmp"))
    try:
        program = path / "root-only"
        program.write_text("#!/bin/sh\necho ran\n")
        program.chmod(0o700)
        path.chmod(0o700)
        yield path
    finally:
        shutil.rmtree(path)


def test_an_unprivileged_job_holds_nothing_and_its_launcher_is_restricted() -> None:
    with running_engine(["runas"]) as engine:
        job = run(engine, f"{STATUS}; echo PPid:$(cut -d' ' -f4 /proc/$$/stat)")
        assert job.exit_code == 0, engine.output(job.id, Stream.STDERR)
        status = status_of(engine.output(job.id).decode())
        assert status == {
            "Uid": f"{NOBODY}" * 4,
            "Gid": f"{NOBODY}" * 4,
            "Groups": "",
            "SigBlk": "0" * 16,
            "SigIgn": "0" * 16,  # SIGINT and SIGHUP default, as every other signal
            "CapInh": "0" * 16,
            "CapPrm": "0" * 16,
            "CapEff": "0" * 16,
            "CapBnd": "0" * 16,
            "CapAmb": "0" * 16,
            "NoNewPrivs": "1",
        }
        parent = int(engine.output(job.id).decode().rsplit("PPid:", 1)[1])
        restricted = [c.pid for c in engine._restricted_launchers.clients]
        assert parent in restricted
        for pid in restricted:
            launcher = process_status(pid)
            # Restricted for its children; still root, with its own capabilities, for itself.
            assert launcher["NoNewPrivs"] == "1" and launcher["CapBnd"] == "0" * 16
            assert launcher["CapInh"] == "0" * 16 and launcher["CapEff"] != "0" * 16
            assert launcher["Uid"].split() == ["0"] * 4 and launcher["Gid"].split() == ["0"] * 4
        for client in engine._launchers.clients:  # the other launchers are not restricted
            assert process_status(client.pid)["NoNewPrivs"] == "0"


def test_a_job_without_an_identity_of_its_own_is_not_restricted() -> None:
    with running_engine() as engine:
        job = engine.submit(JobSpec("/bin/sh", args=["-c", STATUS]))
        ended = engine.wait(job.id, timeout=30)
        assert ended.exit_code == 0
        status = status_of(engine.output(job.id).decode())
        assert status["NoNewPrivs"] == "0" and status["CapBnd"] != "0" * 16
        assert engine._restricted_launchers.clients == []  # never needed, never started


def test_a_directory_the_jobs_user_may_not_enter_fails_the_start(closed_dir: Path) -> None:
    with running_engine(["runas"]) as engine:
        refused = run(engine, "pwd", cwd=str(closed_dir))
        assert refused.end_reason is EndReason.FAILED_TO_START
        assert "cwd" in (refused.message or "") and "Permission denied" in (refused.message or "")
        # The launcher entered it as the job's user, and is itself again: root, at /.
        for client in engine._restricted_launchers.clients:
            assert process_status(client.pid)["Uid"].split() == ["0"] * 4
            assert os.readlink(f"/proc/{client.pid}/cwd") == "/"
        after = run(engine, "id -u; pwd", cwd="/tmp")
        assert after.exit_code == 0
        assert engine.output(after.id).decode().split() == [str(NOBODY), "/tmp"]


def test_a_program_the_jobs_user_may_not_run_fails_the_start(closed_dir: Path) -> None:
    program = closed_dir / "root-only"
    closed_dir.chmod(0o755)  # it may enter; the program itself is root's alone
    with running_engine(["runas"]) as engine:
        job = engine.submit(JobSpec(str(program)), ALICE)
        ended = engine.wait(job.id, timeout=30)
        assert ended.end_reason is EndReason.FAILED_TO_START
        assert ended.message is not None
        assert "exec" in ended.message and "Permission denied" in ended.message
        assert str(program) in ended.message
