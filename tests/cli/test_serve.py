"""`worker serve` as an operator starts it: owning its port, saying what it runs, warning.

Every server here is a real `worker serve` process on a free loopback port, stopped on the
way out (grpc_harness).
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from grpc_certs import make_pki
from grpc_harness import (
    RPC_TIMEOUT,
    WORKER,
    WORKER_GRPC_FIRST,
    Launched,
    launch_serve,
    serve_process,
    spawn_serve,
)

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.serve.report import NO_AUTHORIZATION_WARNING

#: Bound on a refused server's exit.
EXIT_TIMEOUT = 60


def _refused(launched: Launched) -> list[str]:
    """The stderr lines of a server that must exit on its own (non-zero)."""
    try:
        assert launched.process.wait(EXIT_TIMEOUT) == 1, launched.stderr
    finally:
        launched.reap()
    return launched.stderr.splitlines()


def test_a_second_server_on_a_taken_port_exits_with_one_line_and_the_first_keeps_it(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    with serve_process(tmp_path / "first") as first:
        address = f"127.0.0.1:{first.port}"
        second = spawn_serve(pki, "--listen", address, "--state-dir", str(tmp_path / "second"))
        assert _refused(second) == [
            f"worker serve: error: cannot listen on {address}: "
            "the address is already in use (another server listens there)"
        ]
        # Every call reaches the first server (gRPC's SO_REUSEPORT would have shared them).
        stub = first.stub()
        for _ in range(10):
            stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
        first.process.terminate()
        assert first.process.wait(EXIT_TIMEOUT) == 0


@pytest.mark.parametrize("worker", [WORKER, WORKER_GRPC_FIRST], ids=["plain", "grpc first"])
def test_a_port_held_by_another_program_is_one_line_without_grpc_core_logs(
    tmp_path: Path, worker: list[str]
) -> None:
    pki = make_pki(tmp_path / "pki")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        lines = _refused(spawn_serve(pki, "--listen", address, worker=worker))
    # Nothing from gRPC core (its `E... add_port.cc ... Failed to add port` line) around it.
    assert lines == [
        f"worker serve: error: cannot listen on {address}: "
        "the address is already in use (another server listens there)"
    ]


def test_the_start_up_line_names_addresses_plugins_and_state_dir_and_warns_without_rbac(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with serve_process(tmp_path / "pki", "--plugins", "netns", "--state-dir", str(state)) as serve:
        stub = serve.stub()
        stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
        serve.process.terminate()
        assert serve.process.wait(EXIT_TIMEOUT) == 0
    lines = serve.stderr.splitlines()
    [summary] = [line for line in lines if "listening on" in line]
    assert summary.startswith(f"worker serve: listening on 127.0.0.1:{serve.port} (grpc); ")
    plugins = summary.split("; plugins: ")[1].split(";")[0].split(", ")
    assert {"memory", "grpc", "netns"} <= set(plugins)
    assert summary.endswith(f"; state dir: {state}")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    # Printed, and logged (the log's own format) for whoever collects the logs.
    assert f"worker serve: warning: {NO_AUTHORIZATION_WARNING}" in lines
    assert any(f"WARNING worker.serve: {NO_AUTHORIZATION_WARNING}" in line for line in lines)
    assert lines[-2:] == ["worker serve: stopping every job...", "worker serve: stopped"]


def test_with_an_authorization_plugin_there_is_no_warning(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[roles.reader]\npermissions = ["read:all"]\n\n[users]\nalice = ["reader"]\n')
    config = tmp_path / "server.toml"
    config.write_text(f'[plugins.rbac]\npolicy = "{policy}"\n')
    pki = make_pki(tmp_path / "pki")
    launched = launch_serve(pki, "--plugins", "rbac", "--config", str(config))
    try:
        launched.process.terminate()
        assert launched.process.wait(EXIT_TIMEOUT) == 0
    finally:
        launched.reap()
    assert "rbac" in launched.stderr
    assert "warning" not in launched.stderr


def test_without_any_transport_serve_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    [line] = _refused(spawn_serve(pki, "--plugins", "no:grpc", grpc_flags=False))
    assert line == (
        "worker serve: error: no transport is enabled (the gRPC one is off: no:grpc); "
        "enable one with --plugins NAME"
    )
    [line] = _refused(spawn_serve(pki, "--plugins", "no:grpc"))
    assert line == (
        "worker serve: error: --listen, --ca, --cert, --key: "
        "the grpc transport is disabled (no:grpc)"
    )
