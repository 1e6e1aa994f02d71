"""Durable state against a real ``worker serve --state-dir DIR`` (the ``sqlite`` job store and
the ``spool`` output store, serve's defaults), restarted, SIGTERMed and SIGKILLed.

- A restart keeps every record with its name, labels and idempotency key, and replays every
  job's output with the same bytes at the same offsets, in the same order across streams.
- SIGTERM ends a running job with reason ``shutdown``, and a ``worker job submit --wait``
  following it is told so; SIGKILL, then a restart: the job is ``lost``, saying why.
- The state directory and every file in it are private (0700, 0600); a second server on it,
  a read-only file system and a damaged database each stop the server with one line, and
  the database is never rewritten.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import sqlite3
import stat
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from grpc_certs import TestPKI, make_pki
from grpc_harness import WORKER, shell, spawn_serve, wait_for
from helpers import alive
from reliability_harness import (
    RPC_TIMEOUT,
    ServerProcess,
    client_env,
    integrity_check,
    job_processes_by_id,
    list_all,
    replay,
    sigkill,
    submit,
    tmpfs,
    wait_ended,
    worker_serve,
    write_config,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

#: Bound on a server that must refuse to start.
REFUSAL_TIMEOUT = 60.0

#: A job writing to both streams in turn, so replay must keep their order of arrival.
INTERLEAVED = (
    "for i in 1 2 3 4 5; do echo out-$i; echo err-$i >&2; done; "
    "head -c 100000 /dev/zero | tr '\\0' x; echo; echo done >&2; exit 3"
)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "server.toml", "[engine]\nstop_grace = 1.0\n")


def durable(
    tmp_path: Path, pki: TestPKI, state: Path, config: Path
) -> AbstractContextManager[ServerProcess]:
    """One run of ``worker serve`` on ``state`` (a context manager: see worker_serve)."""
    return worker_serve(
        tmp_path / "runs", "--state-dir", str(state), "--config", str(config), pki=pki
    )


def test_restart_keeps_records_output_names_labels_and_idempotency_keys(
    tmp_path: Path, pki: TestPKI, config: Path
) -> None:
    state = tmp_path / "state"
    with durable(tmp_path, pki, state, config) as first:
        stub = first.stub()
        request = pb.SubmitRequest(
            spec=pb.JobSpec(
                command="/bin/sh",
                args=["-c", INTERLEAVED],
                name="nightly-build",
                labels={"team": "infra", "tier": "2"},
            ),
            idempotency_key="build-2024-06-01",
        )
        job = stub.Submit(request, timeout=RPC_TIMEOUT).job
        before = wait_ended(stub, job.id)
        other = wait_ended(stub, submit(first.stub("bob"), shell("echo bob's")).id)
        output = replay(stub, job.id)
        assert first.stop() == 0

    assert before.exit_code == 3 and before.end_reason == pb.END_REASON_EXITED
    out = b"".join(d for s, _, d in output if s == pb.STREAM_STDOUT)
    assert out.startswith(b"out-1\nout-2\n") and out.endswith(b"x" * 100000 + b"\n")
    with durable(tmp_path, pki, state, config) as second:
        stub = second.stub()
        after = stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
        assert after == before, "the record changed across the restart"
        assert after.spec.name == "nightly-build"
        assert dict(after.spec.labels) == {"team": "infra", "tier": "2"}
        assert after.idempotency_key == "build-2024-06-01"
        assert stub.Get(pb.GetRequest(job_id=other.id), timeout=RPC_TIMEOUT).job == other
        # Same bytes, same offsets, same interleaving of the two streams.
        assert replay(stub, job.id) == output
        resumed = stub.Tail(
            pb.TailRequest(job_id=job.id, from_offsets=pb.Offsets(stdout=12, stderr=6)),
            timeout=RPC_TIMEOUT,
        )
        tail = [(m.stream, m.offset, m.data) for m in resumed]
        assert b"".join(d for s, _, d in tail if s == pb.STREAM_STDOUT) == out[12:]
        assert tail[0][1] in (12, 6)
        # Filters and prefixes over records written by the first run.
        by_label = list_all(stub, pb.ListRequest(labels={"team": "infra"}))
        assert [j.id for j in by_label] == [job.id]
        by_name = list_all(stub, pb.ListRequest(name="nightly-build"))
        assert [j.id for j in by_name] == [job.id]
        assert stub.Get(pb.GetRequest(job_id=job.id[:8]), timeout=RPC_TIMEOUT).job.id == job.id
        # The key still names the first job: nothing new starts.
        again = stub.Submit(request, timeout=RPC_TIMEOUT).job
        assert again.id == job.id and again.state == pb.JOB_STATE_ENDED
        assert len(list_all(stub)) == 2
        # Bob's key space is his own.
        bobs = second.stub("bob").Submit(request, timeout=RPC_TIMEOUT).job
        assert bobs.id != job.id
        wait_ended(stub, bobs.id)
        assert second.stop() == 0


def test_sigterm_ends_a_running_job_with_reason_shutdown_and_submit_wait_says_so(
    tmp_path: Path, pki: TestPKI, config: Path
) -> None:
    state = tmp_path / "state"
    with durable(tmp_path, pki, state, config) as server:
        environ = client_env(server, tmp_path)
        # The real CLI, following the job's output until the server's shutdown ends it.
        cli = subprocess.Popen(
            [*WORKER, "job", "submit", "--wait", "--", "sh", "-c", "echo started; exec sleep 300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
        )
        try:
            assert cli.stdout is not None
            ready, _, _ = select.select([cli.stdout], [], [], 60)
            assert ready, "the CLI printed nothing within 60 s"
            assert cli.stdout.readline() == b"started\n"  # one write of a whole line
            # And a Submit that waits for its job to end, in flight during the shutdown.
            waiting = server.stub("carol").Submit.future(
                pb.SubmitRequest(spec=shell("exec sleep 300"), wait_seconds=600),
                timeout=RPC_TIMEOUT + 600,
            )
            wait_for(
                lambda: (
                    len(list_all(server.stub(), pb.ListRequest(states=[pb.JOB_STATE_RUNNING]))) == 2
                ),
                timeout=30,
                what="both jobs to run",
            )
            jobs = list_all(server.stub(), pb.ListRequest(states=[pb.JOB_STATE_RUNNING]))
            server.process.send_signal(signal.SIGTERM)
            out, err = cli.communicate(timeout=60)
            answered = waiting.result(timeout=60).job
            assert server.process.wait(60) == 0
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait(10)
    message = err.decode()
    print(f"\nsubmit --wait, on the server's SIGTERM: exit {cli.returncode}, {message.strip()!r}")
    assert cli.returncode == 75, (out, message)  # lost or shut down: see the exit table
    assert "shut" in message and "down" in message, message
    assert "Traceback" not in message
    assert answered.state == pb.JOB_STATE_ENDED
    assert answered.end_reason == pb.END_REASON_SHUTDOWN, answered
    assert not any(job.id in job_processes_by_id() for job in jobs)

    # The restart does not turn them into lost jobs: they ended before the server stopped.
    with durable(tmp_path, pki, state, config) as again:
        for job in jobs:
            record = again.stub().Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
            assert record.end_reason == pb.END_REASON_SHUTDOWN, record
        cli_record = next(j for j in jobs if j.owner == "alice")
        assert replay(again.stub(), cli_record.id) == [(pb.STREAM_STDOUT, 0, b"started\n")]


def test_sigkill_then_restart_the_running_job_is_lost_and_says_why(
    tmp_path: Path, pki: TestPKI, config: Path
) -> None:
    state = tmp_path / "state"
    with durable(tmp_path, pki, state, config) as server:
        stub = server.stub()
        job = submit(stub, shell("echo started; echo on-err >&2; exec sleep 300"))
        done = wait_ended(stub, submit(stub, shell("echo finished")).id)
        wait_for(
            lambda: {m.stream for m in replay_until_now(stub, job.id)} == {1, 2},
            timeout=30,
            what="the job's output",
        )
        processes = job_processes_by_id().get(job.id, [])
        assert processes
        tree = sigkill(server)
        wait_for(
            lambda: not any(alive(p) for p in [*processes, *tree]),
            timeout=30,
            what="the job and the launcher to die with the server",
        )
    assert integrity_check(state / "jobs.sqlite3") == ["ok"]

    with durable(tmp_path, pki, state, config) as restarted:
        stub = restarted.stub()
        record = stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
        assert record.state == pb.JOB_STATE_ENDED
        assert record.end_reason == pb.END_REASON_LOST, record
        assert "stopped while it ran" in record.message, record.message
        assert record.HasField("ended_at") and record.ended_at >= record.started_at
        assert any(job.id in line for line in restarted.stderr_lines), restarted.stderr
        got = {s: d for s, _, d in replay(stub, job.id)}
        assert got == {pb.STREAM_STDOUT: b"started\n", pb.STREAM_STDERR: b"on-err\n"}
        # A job that had ended keeps how it ended.
        assert stub.Get(pb.GetRequest(job_id=done.id), timeout=RPC_TIMEOUT).job == done
        assert list_all(stub, pb.ListRequest(states=ACTIVE)) == []
        assert restarted.stop() == 0


#: Every state but ENDED.
ACTIVE = [
    pb.JOB_STATE_PENDING,
    pb.JOB_STATE_RUNNING,
    pb.JOB_STATE_STOPPING,
    pb.JOB_STATE_QUEUED,
    pb.JOB_STATE_HELD,
    pb.JOB_STATE_PAUSED,
]


def replay_until_now(stub: object, job_id: str) -> list[pb.OutputChunk]:
    request = pb.TailRequest(job_id=job_id, until_now=True)
    return list(stub.Tail(request, timeout=RPC_TIMEOUT))  # type: ignore[attr-defined]


# --- the state directory ------------------------------------------------------------------------


def _modes(state: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of everything under ``state``, and ``state`` itself."""
    found = {".": oct(stat.S_IMODE(state.stat().st_mode))}
    for root, dirs, files in os.walk(state):
        for name in [*dirs, *files]:
            path = Path(root, name)
            info = path.lstat()
            assert info.st_uid == os.geteuid(), f"{path} is owned by uid {info.st_uid}"
            found[str(path.relative_to(state))] = oct(stat.S_IMODE(info.st_mode))
    return found


def test_the_state_directory_is_0700_and_every_file_in_it_0600(
    tmp_path: Path, pki: TestPKI, config: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # made by hand with a loose mode: the server tightens it
    old = os.umask(0)  # the server inherits a umask that takes nothing away
    try:
        with durable(tmp_path, pki, state, config) as server:
            job = wait_ended(server.stub(), submit(server.stub(), shell(INTERLEAVED)).id)
            running = _modes(state)
            assert server.stop() == 0
    finally:
        os.umask(old)
    stopped = _modes(state)
    names = {Path(p).name for p in running}
    assert {"lock", "jobs.sqlite3", "jobs.sqlite3-wal", "stdout", "stderr", "index"} <= names
    assert job.id in {Path(p).name for p in running}
    for modes in (running, stopped):
        for path, mode in modes.items():
            is_dir = (state / path).is_dir() if (state / path).exists() else path == "."
            assert mode == ("0o700" if is_dir else "0o600"), f"{path}: {mode}"


def test_a_second_server_on_the_same_state_directory_exits_with_one_line_naming_it(
    tmp_path: Path, pki: TestPKI, config: Path
) -> None:
    state = tmp_path / "state"
    with durable(tmp_path, pki, state, config) as first:
        second = spawn_serve(pki, "--state-dir", str(state), "--config", str(config))
        try:
            code = second.process.wait(REFUSAL_TIMEOUT)
        finally:
            second.reap()
        lines = second.stderr.splitlines()
        assert code != 0
        assert len(lines) == 1, lines
        assert str(state) in lines[0] and "in use" in lines[0], lines[0]
        assert f"pid {first.pid}" in lines[0], lines[0]
        # The first one is unaffected.
        assert wait_ended(first.stub(), submit(first.stub(), shell("true")).id).exit_code == 0
        assert first.stop() == 0


def _refused(pki: TestPKI, state: Path, config: Path) -> str:
    """Start a server on ``state`` that must refuse: its one line on stderr."""
    launched = spawn_serve(pki, "--state-dir", str(state), "--config", str(config))
    try:
        code = launched.process.wait(REFUSAL_TIMEOUT)
    finally:
        launched.reap()
    lines = launched.stderr.splitlines()
    assert code != 0, launched.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("worker serve: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("exists", [False, True], ids=["to-be-made", "existing"])
def test_a_state_directory_on_a_read_only_file_system_is_one_clear_line(
    tmp_path: Path, pki: TestPKI, config: Path, exists: bool
) -> None:
    with tmpfs(tmp_path / "ro", "1m") as mount:
        state = mount / "state"
        if exists:
            state.mkdir(mode=0o700)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, timeout=30)
        line = _refused(pki, state, config)
        assert str(state) in line and "read-only" in line, line


def _damage_truncated(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as file:
        file.truncate(size // 2)


def _damage_pages(db: Path) -> None:
    """Garbage over every page but the first (the header): b-trees no longer parse."""
    with db.open("r+b") as file:
        page = int.from_bytes(file.read(18)[16:18], "big")
        file.seek(page)
        file.write(hashlib.sha256(b"x").digest() * ((db.stat().st_size - page) // 32))


def _damage_not_a_database(db: Path) -> None:
    db.write_bytes(b"this is not a database, but someone's notes\n" * 100)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_damage_pages, ("corrupt",)),
        (_damage_truncated, ("truncated",)),
        (_damage_not_a_database, ("not an SQLite database",)),
    ],
    ids=["garbage-pages", "truncated", "not-a-database"],
)
def test_a_damaged_database_stops_the_server_with_one_line_and_is_left_untouched(
    tmp_path: Path, pki: TestPKI, config: Path, damage: object, words: tuple[str, ...]
) -> None:
    state = tmp_path / "state"
    with durable(tmp_path, pki, state, config) as server:
        for _ in range(20):  # a database of a few pages
            wait_ended(server.stub(), submit(server.stub(), shell("echo hello")).id)
        assert server.stop() == 0
    db = state / "jobs.sqlite3"
    damage(db)  # type: ignore[operator]
    before = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in state.iterdir() if p.is_file()
    }
    line = _refused(pki, state, config)
    assert str(db) in line, line
    for word in words:
        assert word in line, line
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in state.iterdir() if p.is_file()}
    # The lock's content is the holder's pid: the refused server held it for a moment.
    before.pop("lock", None)
    after.pop("lock", None)
    assert after == before, "the refused database (or its WAL) was modified"


def test_the_database_checks_ok_read_only_after_a_graceful_stop(
    tmp_path: Path, pki: TestPKI, config: Path
) -> None:
    state = tmp_path / "state"
    with durable(tmp_path, pki, state, config) as server:
        ids = [submit(server.stub(), shell("echo $WORKER_JOB_ID")).id for _ in range(30)]
        for job_id in ids:
            wait_ended(server.stub(), job_id)
        assert server.stop() == 0
    conn = sqlite3.connect(f"file:{state / 'jobs.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
    finally:
        conn.close()
