"""``worker job`` as a user runs it: the installed ``worker`` program, the committed dev certs.

The server is in this process (a real engine behind a real mTLS server on 127.0.0.1), with
the development certificate set from ``certs/``; each client is a separate ``worker``
process, so Ctrl-C (SIGINT) and stderr are exactly what a terminal would see.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_harness import wait_for

from worker_core._engine import Engine
from worker_plugins.grpc_transport.server import GrpcServer
from worker_plugins.grpc_transport.tls import TlsFiles

CERTS = Path(__file__).resolve().parents[2] / "certs"
WORKER = Path(sys.executable).parent / "worker"
#: A line logged by gRPC core itself (absl format: I1122 21:22:01.219901   12785 file.cc:1] ...).
GRPC_CORE_LOG = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")

pytestmark = pytest.mark.skipif(
    not (CERTS / "alice.pem").exists() or not WORKER.exists(),
    reason="needs the committed dev certificates and the installed worker program",
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Engine, str]]:
    engine = Engine().start()
    grpc_server = GrpcServer(engine)
    try:
        port = grpc_server.start(
            "127.0.0.1",
            0,
            TlsFiles(CERTS / "ca.pem", CERTS / "server.pem", CERTS / "server.key"),
        )
        yield engine, f"127.0.0.1:{port}"
    finally:
        engine.close(grace=0.5)
        grpc_server.stop(1.0)


@pytest.fixture
def env(server: tuple[Engine, str], tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "GRPC_"))}
    environ.update(
        WORKER_SERVER=server[1],
        WORKER_CA=str(CERTS / "ca.pem"),
        WORKER_CERT=str(CERTS / "alice.pem"),
        WORKER_KEY=str(CERTS / "alice.key"),
        XDG_CONFIG_HOME=str(tmp_path),
    )
    return environ


def worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(WORKER), "job", *args], env=env, capture_output=True, timeout=60, check=False
    )


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(WORKER), "job", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_submit_wait_through_the_real_program(env: dict[str, str]) -> None:
    done = worker(env, "submit", "--wait", "--", "sh", "-c", "printf 'a\\0b'; echo E >&2; exit 4")
    assert done.returncode == 4, done.stderr
    assert done.stdout == b"a\0b"
    assert done.stderr == b"E\n"


def test_ctrl_c_on_tail_follow_exits_130_quietly_and_leaves_the_job(
    server: tuple[Engine, str], env: dict[str, str]
) -> None:
    engine = server[0]
    job_id = (
        worker(env, "submit", "--", "sh", "-c", "echo started; sleep 30").stdout.decode().strip()
    )
    try:
        follower = start(env, "tail", "-f", job_id)
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"started\n"
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
        assert follower.returncode == 130
        assert err == b""
        assert not engine.get(job_id).is_finished
    finally:
        engine.stop(job_id, grace=0)


def test_ctrl_c_on_submit_wait_names_the_running_job(
    server: tuple[Engine, str], env: dict[str, str]
) -> None:
    engine = server[0]
    waiter = start(env, "submit", "--wait", "--", "sh", "-c", "echo started; sleep 30")
    assert waiter.stdout is not None
    assert waiter.stdout.readline() == b"started\n"
    waiter.send_signal(signal.SIGINT)
    _, err = waiter.communicate(timeout=20)
    assert waiter.returncode == 130
    [line] = err.decode().splitlines()
    job_id = line.split()[3]
    try:
        assert (
            line == f"worker job: job {job_id} keeps running (`worker job stop {job_id}` stops it)"
        )
        assert not engine.get(job_id).is_finished
    finally:
        engine.stop(job_id, grace=0)
    wait_for(lambda: engine.get(job_id).is_finished)


def test_handshake_failure_is_one_line(env: dict[str, str]) -> None:
    # The client trusts a CA that did not issue the server's certificate (alice's own cert).
    done = worker({**env, "WORKER_CA": str(CERTS / "alice.pem")}, "list")
    assert done.returncode == 69
    lines = done.stderr.decode().splitlines()
    # One line: worker_core.cli sets GRPC_VERBOSITY before grpc is first imported, so gRPC
    # core does not log the failed handshake after our message.
    assert len(lines) == 1, lines
    assert lines[0].startswith("worker job: error: TLS handshake with"), lines
