"""The namespace plugins and runas, enforced for real: what the job itself can see and do."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import job_processes

from worker_core import Config, EndReason, Engine, InvalidSpec, Isolation, JobSpec, Stream

PY = sys.executable


def run(engine: Engine, code: str, **spec: object) -> tuple[int | None, str, str]:
    job = engine.submit(JobSpec(PY, args=["-c", code], **spec))  # type: ignore[arg-type]
    ended = engine.wait(job.id, timeout=20)
    assert ended.is_finished, ended
    out = engine.output(job.id).decode()
    err = engine.output(job.id, Stream.STDERR).decode()
    return ended.exit_code, out, err


def test_netns_job_sees_only_loopback_and_cannot_reach_the_hosts(listener: int) -> None:
    code = f"""
import socket
print(sorted(line.split(':')[0].strip() for line in open('/proc/self/net/dev').readlines()[2:]))
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
socket.create_connection(s.getsockname(), timeout=2).close()   # its own lo is up
print('own loopback works')
try:
    socket.create_connection(('127.0.0.1', {listener}), timeout=2)
    print('REACHED THE HOST')
except OSError as exc:
    print('host unreachable:', type(exc).__name__)
"""
    with Engine(["netns"]) as engine:
        code_, out, err = run(engine, code)
    assert code_ == 0, err
    lines = out.splitlines()
    assert lines[0] == "['lo']"
    assert lines[1] == "own loopback works"
    assert lines[2] == "host unreachable: ConnectionRefusedError"
    # The same job without the plugin does reach it: the test really tests something.
    with Engine() as engine:
        _, out, _ = run(engine, code)
    assert "REACHED THE HOST" in out


def test_pidns_job_is_pid_1_and_cannot_see_the_host() -> None:
    code = f"""
import os
print(os.getpid())
print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
print(os.path.exists('/proc/{os.getpid()}'))
"""
    with Engine(["pidns"]) as engine:
        code_, out, err = run(engine, code)
    assert code_ == 0, err
    pid, visible, sees_us = out.splitlines()
    assert pid == "1"
    assert visible == "[1]"
    assert sees_us == "False" or os.getpid() == 1


def test_pidns_children_die_with_the_job() -> None:
    # The job leaves a background child and exits: PID 1 gone means the namespace is gone.
    with Engine(["pidns"]) as engine:
        job = engine.submit(JobSpec("sh", args=["-c", "sleep 60 & echo started"]))
        ended = engine.wait(job.id, timeout=10)
        assert ended.exit_code == 0
        assert engine.output(job.id) == b"started\n"
    # tests/conftest.py fails the run if the sleep (it carries WORKER_JOB_ID) survived.
    assert job_processes(job.id) == [], "a child outlived PID 1"


def test_a_pidns_job_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    with Engine(["pidns"]) as engine:
        job = engine.submit(JobSpec("/bin/sleep", args=["60"]))
        stopped = engine.stop(job.id, grace=0.5)
    assert stopped.end_reason is EndReason.STOPPED
    assert stopped.signal == 9  # PID 1 without a handler ignores SIGTERM: the kill follows


def test_mntns_mounts_do_not_leak_to_the_host() -> None:
    with tempfile.TemporaryDirectory() as target, Engine(["mntns"]) as engine:
        job = engine.submit(
            JobSpec(
                "sh",
                args=[
                    "-c",
                    f"mount -t tmpfs worker-test-tmpfs {target} && grep -c {target} /proc/self/mounts",
                ],
            )
        )
        ended = engine.wait(job.id, timeout=10)
        assert ended.exit_code == 0, engine.output(job.id, Stream.STDERR)
        assert engine.output(job.id) == b"1\n"
        assert target not in Path("/proc/self/mounts").read_text()


def sh(engine: Engine, script: str, **spec: object) -> tuple[int | None, str, str]:
    # A shell, not this interpreter: the venv's python lives under /root, which the job's
    # unprivileged user may not enter (that refusal is itself tested below).
    job = engine.submit(JobSpec("sh", args=["-c", script], **spec))  # type: ignore[arg-type]
    ended = engine.wait(job.id, timeout=20)
    out = engine.output(job.id).decode()
    return ended.exit_code, out, engine.output(job.id, Stream.STDERR).decode()


def test_runas_switches_identity_drops_groups_and_sets_no_new_privs(tmp_path: Path) -> None:
    script = "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status | tr -d ' \t'"
    with Engine(["runas"]) as engine:
        code, out, err = sh(engine, script, isolation=Isolation(uid=65534, gid=65534))
        assert code == 0, err
        assert out.splitlines() == ["65534", "65534", "65534", "NoNewPrivs:1"]
        # A directory only root may enter: the job, no longer root, fails to start there.
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        job = engine.submit(JobSpec("/bin/true", cwd=str(private), isolation=Isolation(uid=65534)))
        failed = engine.wait(job.id, 10)
        assert failed.end_reason is EndReason.FAILED_TO_START
        assert "Permission denied" in failed.message


def test_runas_policy_refuses_root_and_applies_defaults() -> None:
    config = Config.from_mapping(
        {"plugins": {"runas": {"allow_root": False, "default_uid": 65534, "default_gid": 65534}}}
    )
    with Engine(["runas"], config) as engine:
        assert sh(engine, "id -u")[1] == "65534\n"
        with pytest.raises(InvalidSpec, match=r"isolation\.uid.*root"):
            engine.submit(JobSpec("/bin/true", isolation=Isolation(uid=0)))
        assert len(engine.list()) == 1, "the refused job left nothing behind"


def test_ids_without_the_runas_plugin_are_refused() -> None:
    with Engine() as engine, pytest.raises(InvalidSpec, match=r"isolation\.uid.*enable 'runas'"):
        engine.submit(JobSpec("/bin/true", isolation=Isolation(uid=65534)))
