"""`worker serve` as an operator runs it: flags, errors, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, WORKER, serve_process, shell, wait_for
from helpers import alive

from worker_plugins.grpc_transport import worker_pb2 as pb


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` now alive."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_job_and_leaves_no_process(tmp_path: Path, signum: int) -> None:
    with serve_process(tmp_path, "--grace", "0.5") as serve:
        stub = serve.stub()
        # One job ignores SIGTERM (needs the SIGKILL after the grace period), one does not.
        stubborn = stub.Submit(
            pb.SubmitRequest(spec=shell("trap '' TERM; echo up; while :; do sleep 0.1; done")),
            timeout=RPC_TIMEOUT,
        ).job
        plain = stub.Submit(pb.SubmitRequest(spec=shell("sleep 300")), timeout=RPC_TIMEOUT).job
        tail = stub.Tail(pb.TailRequest(job_id=stubborn.id), timeout=RPC_TIMEOUT)
        assert next(tail).data == b"up\n"
        watch = stub.Watch(pb.WatchRequest(job_id=plain.id), timeout=RPC_TIMEOUT)
        assert next(watch).state == pb.JOB_STATE_RUNNING
        descendants = _children(serve.process.pid)
        assert {stubborn.pid, plain.pid} <= descendants

        serve.process.send_signal(signum)
        assert serve.process.wait(timeout=30) == 0
        # Followers saw their streams end (normally, or cancelled by the server's stop).
        list(tail)
        records = list(watch)
        assert records and records[-1].state == pb.JOB_STATE_ENDED
        assert records[-1].end_reason == pb.END_REASON_SHUTDOWN
        wait_for(lambda: not any(alive(p) for p in descendants), timeout=10, what="no process left")
    assert "Traceback" not in serve.stderr


def test_config_file_sets_defaults_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[plugins.grpc]\nlisten = "127.0.0.1:1"\nmax_streams_per_client = 1\n')
    # --listen (from serve_process) wins over the file; the stream cap comes from the file.
    with serve_process(tmp_path / "pki", "--config", str(config)) as serve:
        stub = serve.stub()
        job = stub.Submit(pb.SubmitRequest(spec=shell("sleep 30")), timeout=RPC_TIMEOUT).job
        first = stub.Watch(pb.WatchRequest(job_id=job.id), timeout=RPC_TIMEOUT)
        next(first)
        with pytest.raises(grpc.RpcError) as info:
            next(stub.Watch(pb.WatchRequest(job_id=job.id), timeout=RPC_TIMEOUT))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()
        serve.process.terminate()
        assert serve.process.wait(timeout=30) == 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKER, "serve", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ca", "/nonexistent/ca.pem"), "CA file '/nonexistent/ca.pem' does not exist"),
        (("--listen", "nonsense"), "is not HOST:PORT"),
        (("--plugins", "no-such-plugin"), "unknown plugin 'no-such-plugin'"),
        (("--config", "/nonexistent.toml"), "no such config file"),
        (("--max-streams-per-client", "0"), "0 is not in the range"),
    ],
)
def test_bad_flags_fail_with_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = _run(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_tls_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    result = _run("--ca", str(junk), "--cert", str(junk), "--key", str(junk))
    assert result.returncode == 1
    assert f"CA file '{junk}' holds no PEM certificate" in result.stderr
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for flag in ("--plugins", "--config", "--listen", "--ca", "--cert", "--key", "--grace"):
        assert flag in result.stdout
