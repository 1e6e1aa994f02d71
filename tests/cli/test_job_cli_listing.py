"""``worker job`` names, labels, idempotency keys, pages, filters, prefixes and purge, as a
user runs it: the installed ``worker`` program, one process per command, with the committed
development certificates (certs/) and the example policy (examples/policy.toml).

The server is in this process: a real engine with the sqlite job store (``worker serve``'s
default) and the ``rbac`` plugin behind a real mTLS server on 127.0.0.1.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import attrs
import grpc
import pytest

from worker_core import JobSpec, Principal
from worker_core._config import Config, EngineSettings
from worker_core._engine import Engine
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc
from worker_plugins.grpc_transport.server import GrpcServer
from worker_plugins.grpc_transport.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
CERTS = ROOT / "certs"
POLICY = ROOT / "examples" / "policy.toml"
WORKER = Path(sys.executable).parent / "worker"
#: Bound on every command and every wait of these tests.
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    not (CERTS / "alice.pem").exists() or not WORKER.exists(),
    reason="needs the committed dev certificates and the installed worker program",
)


@attrs.frozen
class Server:
    engine: Engine
    target: str
    home: Path  # XDG_CONFIG_HOME of the clients: no stray client.toml

    def env(self, cn: str) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "GRPC_"))}
        environ.update(
            WORKER_SERVER=self.target,
            WORKER_CA=str(CERTS / "ca.pem"),
            WORKER_CERT=str(CERTS / f"{cn}.pem"),
            WORKER_KEY=str(CERTS / f"{cn}.key"),
            XDG_CONFIG_HOME=str(self.home),
        )
        return environ

    def stub(self, cn: str) -> tuple[grpc.Channel, pb_grpc.WorkerStub]:
        creds = grpc.ssl_channel_credentials(
            (CERTS / "ca.pem").read_bytes(),
            (CERTS / f"{cn}.key").read_bytes(),
            (CERTS / f"{cn}.pem").read_bytes(),
        )
        channel = grpc.secure_channel(
            self.target, creds, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        return channel, pb_grpc.WorkerStub(channel)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("job-cli-listing")
    config = Config(
        engine=EngineSettings(state_dir=str(directory / "state")),
        plugins={"rbac": {"policy": str(POLICY)}},
    )
    engine = Engine(["rbac", "sqlite"], config).start()
    grpc_server = GrpcServer(engine)
    try:
        port = grpc_server.start(
            "127.0.0.1", 0, TlsFiles(CERTS / "ca.pem", CERTS / "server.pem", CERTS / "server.key")
        )
        yield Server(engine, f"127.0.0.1:{port}", directory)
    finally:
        engine.close(grace=0.5)
        grpc_server.stop(1.0)


def worker(server: Server, cn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKER), "job", *args],
        env=server.env(cn),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def ok(server: Server, cn: str, *args: str) -> str:
    done = worker(server, cn, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("worker job: error: "), lines
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    return done.stderr


def listed(server: Server, cn: str, *args: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = json.loads(ok(server, cn, "list", "--json", *args))
    return records


def ids(records: list[dict[str, object]]) -> list[object]:
    return [record["id"] for record in records]


def tag() -> str:
    return f"run={uuid.uuid4().hex[:10]}"


def finished(server: Server, cn: str, *labels: str) -> str:
    flags = [arg for label in labels for arg in ("--label", label)]
    job_id = ok(server, cn, "submit", *flags, "--", "sh", "-c", "echo hello").strip()
    server.engine.wait(job_id, TIMEOUT)
    return job_id


# --- names, labels, idempotency keys -------------------------------------------------------


def test_submit_with_a_name_labels_and_a_key_and_list_shows_them(server: Server) -> None:
    key = f"nightly-{uuid.uuid4().hex}"
    argv = ["submit", "--name", "nightly", "--label", "team=data", "--label", "tier=1"]
    argv += ["--idempotency-key", key, "--", "sh", "-c", "echo run >> /dev/null"]
    job_id = ok(server, "alice", *argv).strip()
    assert ok(server, "alice", *argv).strip() == job_id  # a retry: the same job
    server.engine.wait(job_id, TIMEOUT)

    header, *rows = ok(server, "alice", "list", "--name", "nightly").splitlines()
    assert header.split()[:2] == ["ID", "NAME"] and "LABELS" in header.split()
    [row] = [r for r in rows if r.startswith(job_id)]
    assert row.split()[1] == "nightly"
    assert row[header.index("LABELS") :].startswith("team=data,tier=1")

    [record] = listed(
        server, "alice", "--label", "team=data", "--label", "tier=1", "--name", "nightly"
    )
    assert record["id"] == job_id
    spec = record["spec"]  # the library's record shape: name and labels are the spec's
    assert (spec["name"], spec["labels"], record["idempotency_key"]) == (
        "nightly",
        {"team": "data", "tier": "1"},
        key,
    )
    summary = ok(server, "alice", "get", job_id[:8])
    assert "name:" in summary and "nightly" in summary
    assert "team=data,tier=1" in summary and key in summary
    assert json.loads(ok(server, "alice", "get", "--json", job_id))["facts"]["oom_killed"] is False


def test_list_filters_by_state_owner_and_time_and_limits(server: Server) -> None:
    run = tag()
    done = [finished(server, "alice", run) for _ in range(3)]
    sleeper = ok(server, "alice", "submit", "--label", run, "--", "sleep", "30").strip()
    bobs = finished(server, "bob", run)
    try:
        assert set(ids(listed(server, "alice", "--label", run))) == {*done, sleeper}
        assert ids(listed(server, "alice", "--label", run, "--state", "running")) == [sleeper]
        assert set(ids(listed(server, "admin", "--label", run))) == {*done, sleeper, bobs}
        assert ids(listed(server, "admin", "--label", run, "--owner", "bob")) == [bobs]
        assert set(ids(listed(server, "alice", "--label", run, "--ended-after", "1h"))) == set(done)
        assert listed(server, "alice", "--label", run, "--ended-before", "1h") == []
        hour_ago = (datetime.now() - timedelta(hours=1)).isoformat(timespec="seconds")
        assert len(listed(server, "alice", "--label", run, "--created-after", hour_ago)) == 4
        assert listed(server, "alice", "--label", run, "--created-before", "2000-01-01") == []
        # --limit: the newest N (shown oldest first, like the whole list).
        assert ids(listed(server, "alice", "--label", run, "--limit", "2")) == [done[2], sleeper]
    finally:
        server.engine.stop(sleeper, grace=0)


def test_list_follows_pages_transparently(server: Server) -> None:
    run = tag()
    key, value = run.split("=")
    big = tuple("x" * 100_000 for _ in range(10))  # about 1 MB a record
    made = [
        server.engine.submit(JobSpec("/bin/true", big, labels={key: value}), Principal("alice")).id
        for _ in range(20)
    ]
    for job_id in made:
        server.engine.wait(job_id, TIMEOUT)
    channel, stub = server.stub("alice")
    with channel:  # 20 MB of records do not fit in one page: the server sends two or more
        first = stub.List(pb.ListRequest(labels={key: value}, page_size=1000), timeout=TIMEOUT)
    assert first.next_page_token and len(first.jobs) < 20

    rows = ok(server, "alice", "list", "--label", run).splitlines()[1:]
    assert sorted(row.split()[0] for row in rows) == sorted(made)
    limited = ok(server, "alice", "list", "--label", run, "--limit", "17").splitlines()[1:]
    assert [row.split()[0] for row in limited] == made[-17:]


# --- prefixes ------------------------------------------------------------------------------


def _alice_jobs_sharing_a_prefix(server: Server) -> tuple[str, list[str]]:
    """A four-character prefix of two or more jobs of alice (and none of anyone else's):
    jobs are made until two random ids share one (a few hundred, by the birthday bound)."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for job in server.engine.list():
        groups[job.id[:4]].append(job.id if job.owner_name == "alice" else "")
    for _ in range(6000):
        job = server.engine.submit(JobSpec("/bin/true"), Principal("alice"))
        group = groups[job.id[:4]]
        group.append(job.id)
        if len(group) >= 2 and all(group):
            return job.id[:4], sorted(group)
    raise AssertionError("no two ids share a prefix: are ids not random?")


def test_every_command_takes_a_prefix(server: Server) -> None:
    job_id = ok(server, "alice", "submit", "--", "sh", "-c", "echo out; echo err >&2").strip()
    server.engine.wait(job_id, TIMEOUT)
    prefix = job_id[:8]
    assert ok(server, "alice", "get", "--json", prefix).count(job_id) >= 1
    tail = worker(server, "alice", "tail", prefix)
    assert (tail.returncode, tail.stdout, tail.stderr) == (0, "out\n", "err\n")
    assert ok(server, "alice", "tail", "-f", "--stdout", prefix) == "out\n"
    assert ok(server, "alice", "stop", prefix).startswith(f"{job_id} ended: exited with code 0")

    sleeper = ok(server, "alice", "submit", "--", "sleep", "30").strip()
    try:
        stopped = ok(server, "alice", "stop", "--grace", "0", sleeper[:6])
        assert stopped.startswith(f"{sleeper} ended: stopped on request")
    finally:
        server.engine.stop(sleeper, grace=0)


def test_an_ambiguous_prefix_lists_the_candidates(server: Server) -> None:
    prefix, candidates = _alice_jobs_sharing_a_prefix(server)
    for command in ("get", "tail", "stop", "purge"):
        message = one_line_error(worker(server, "alice", command, prefix), 1, "matches several")
        for job_id in candidates[:10]:
            assert job_id in message
    # bob may read none of them: to him the prefix names no job at all.
    one_line_error(worker(server, "bob", "get", prefix), 1, f"no such job: {prefix}")


def test_a_prefix_too_short_or_of_no_readable_job(server: Server) -> None:
    job_id = finished(server, "alice")
    one_line_error(worker(server, "alice", "get", job_id[:3]), 1, "at least 4 characters")
    for name in (job_id, job_id[:10]):
        one_line_error(worker(server, "bob", "get", name), 1, "no such job")
        one_line_error(worker(server, "bob", "tail", name), 1, "no such job")
    assert ok(server, "viewer", "get", job_id[:10]).split()[:2] == ["id:", job_id]


# --- purge ---------------------------------------------------------------------------------


def test_purge_by_ids_prints_what_was_removed(server: Server) -> None:
    first, second = finished(server, "bob"), finished(server, "bob")
    assert ok(server, "bob", "purge", first[:8], second).split() == [first, second]
    one_line_error(worker(server, "bob", "get", first), 1, f"no such job: {first}")
    one_line_error(worker(server, "bob", "tail", second), 1, "no such job")


def test_purge_refusals_are_one_line_and_remove_nothing(server: Server) -> None:
    done = finished(server, "alice")
    running = ok(server, "alice", "submit", "--", "sleep", "30").strip()
    try:
        one_line_error(worker(server, "alice", "purge", done, running), 1, running, "running")
        one_line_error(worker(server, "bob", "purge", done), 1, "no such job")
        one_line_error(worker(server, "viewer", "purge", done), 1, "permission denied")
        assert ok(server, "alice", "get", "--json", done)
    finally:
        server.engine.stop(running, grace=0)
    assert ok(server, "admin", "purge", done, running).split() == [done, running]


def test_purge_by_filter(server: Server) -> None:
    # "operator" is the owner under test: no other test purges its jobs by filter.
    old = {finished(server, "operator") for _ in range(2)}
    cutoff = datetime.now().isoformat()  # local time, as a user types it
    time.sleep(0.01)  # the next job ends strictly after the cutoff
    newer = finished(server, "operator")
    purged = ok(server, "operator", "purge", "--ended-before", cutoff).split()
    assert set(purged) == old
    assert ok(server, "operator", "get", newer)
    nothing = worker(server, "operator", "purge", "--ended-before", "1d")
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert "nothing was removed" in nothing.stderr
    assert ok(server, "admin", "purge", "--owner", "operator").split() == [newer]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag", "problem"),
    [
        (["submit", "--label", "novalue", "--", "true"], "--label", "'novalue' is not KEY=VALUE"),
        (["submit", "--label", "=v", "--", "true"], "--label", "the label key is empty"),
        (["list", "--label", "novalue"], "--label", "no '='"),
        (["list", "--limit", "0"], "--limit", "0"),
        (["list", "--limit", "-3"], "--limit", "-3"),
        (["list", "--limit", "many"], "--limit", "many"),
        (["list", "--ended-before", "7x"], "--ended-before", "neither a duration"),
        (["list", "--created-after", "yesterday"], "--created-after", "ISO time"),
        (["purge", "--ended-before", "1900-01-01"], "--ended-before", "before 1970"),
        (["purge"], "--ended-before", "name the jobs to purge"),
        (["purge", "abcd", "--ended-before", "1d"], "--ended-before", "not both"),
    ],
)
def test_bad_flags_are_usage_errors_naming_the_flag(
    server: Server, argv: list[str], flag: str, problem: str
) -> None:
    before = len(server.engine.list())
    done = worker(server, "alice", *argv)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert flag in done.stderr and problem in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert len(server.engine.list()) == before
