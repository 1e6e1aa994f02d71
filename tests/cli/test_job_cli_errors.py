"""Every failure of ``worker job`` is one clear line on stderr and a documented exit code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_harness import Harness, running_server
from job_cli_harness import assert_one_line_error, client_env, run, write_client_config

from worker_core.plugin import Action, Job, Principal, hookimpl
from worker_plugins.cli.job.errors import EXIT_CONFIG, EXIT_REFUSED, EXIT_UNAVAILABLE
from worker_plugins.cli.job.rpc_errors import STATUS_TABLE, from_rpc_error


class NoMallory:
    """Authorization for the test: ``mallory`` may not submit; everyone else may do anything."""

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool:
        return principal.name != "mallory"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """Overrides the area's plain server: this one refuses mallory (``env`` uses it too)."""
    with running_server(tmp_path_factory.mktemp("job-cli-errors"), plugins=[NoMallory()]) as h:
        yield h


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


# --- the server answers no ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["get", "stop", "tail"])
def test_unknown_job(env: dict[str, str], command: str) -> None:
    result = run([command, "f" * 32], env)
    assert result.exit_code == EXIT_REFUSED
    assert_one_line_error(result, f"no such job: {'f' * 32}")


def test_permission_denied(harness: Harness) -> None:
    result = run(["submit", "--", "true"], client_env(harness, "mallory"))
    assert result.exit_code == EXIT_REFUSED
    assert_one_line_error(result, "permission denied: ")


def test_invalid_argument_names_the_flag_the_user_typed(env: dict[str, str]) -> None:
    # A limit no enabled plugin enforces: refused by the server, never ignored. The server
    # names the field (limits.memory_max, in the answer's metadata); the user reads the flag.
    result = run(["submit", "--memory", "64M", "--", "true"], env)
    assert result.exit_code == EXIT_REFUSED
    line = assert_one_line_error(result, "--memory: is set but no enabled plugin enforces it")
    assert "limits.memory_max" not in line


# --- the server cannot be reached ---------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["get", "x"], ["submit", "--", "true"]])
def test_unreachable_server(env: dict[str, str], command: list[str]) -> None:
    target = f"127.0.0.1:{_closed_port()}"
    result = run(command, {**env, "WORKER_SERVER": target})
    assert result.exit_code == EXIT_UNAVAILABLE
    assert_one_line_error(result, f"cannot reach server at {target}: connection refused")


def test_tail_follow_of_unreachable_server(env: dict[str, str]) -> None:
    target = f"127.0.0.1:{_closed_port()}"
    result = run(["tail", "-f", "x"], {**env, "WORKER_SERVER": target})
    assert_one_line_error(result, "cannot reach server")


def test_server_certificate_from_another_ca(harness: Harness, env: dict[str, str]) -> None:
    other_ca = harness.pki.directory / "other-ca.pem"
    other_ca.write_bytes(harness.pki.other_ca.cert_pem)
    result = run(["list"], {**env, "WORKER_CA": str(other_ca)})
    assert result.exit_code == EXIT_UNAVAILABLE
    assert_one_line_error(result, "TLS handshake with", "not trusted")


def test_client_certificate_the_server_refuses(harness: Harness) -> None:
    foreign = harness.pki.foreign_client("alice")
    result = run(["list"], client_env(harness, "foreign", identity=foreign))
    assert result.exit_code == EXIT_UNAVAILABLE
    assert_one_line_error(result, "refused the connection during the TLS handshake")


def test_expired_client_certificate_is_caught_locally(harness: Harness) -> None:
    expired = harness.pki.expired_client("alice")
    result = run(["list"], client_env(harness, "expired", identity=expired))
    assert result.exit_code == EXIT_CONFIG
    assert_one_line_error(result, "expired on")


def test_server_certificate_used_as_client(harness: Harness) -> None:
    env = client_env(harness)
    env["WORKER_CERT"] = str(harness.pki.server_cert_path)
    env["WORKER_KEY"] = str(harness.pki.server_key_path)
    result = run(["list"], env)
    assert result.exit_code == EXIT_CONFIG
    assert_one_line_error(result, "not a client certificate")


# --- the client's own setup ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["WORKER_CA", "WORKER_CERT", "WORKER_KEY"])
def test_missing_certificate_file(env: dict[str, str], which: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = run(["list"], {**env, which: str(missing)})
    assert result.exit_code == EXIT_CONFIG
    assert_one_line_error(result, str(missing), "does not exist")


def test_key_that_does_not_match(harness: Harness, env: dict[str, str]) -> None:
    _, other_key = harness.pki.client("bob").write(harness.pki.directory, "client-bob")
    result = run(["list"], {**env, "WORKER_KEY": str(other_key)})
    assert_one_line_error(result, "does not match")


@pytest.mark.parametrize(("flag", "var"), [("--cert", "WORKER_CERT"), ("--key", "WORKER_KEY")])
def test_no_certificate_configured(env: dict[str, str], flag: str, var: str) -> None:
    result = run(["list"], {**env, var: None})
    assert result.exit_code == EXIT_CONFIG
    assert_one_line_error(result, f"pass {flag} or set {var}")


def test_bad_client_config(env: dict[str, str], tmp_path: Path) -> None:
    config = write_client_config(tmp_path / "client.toml", server="x:1", colour="blue")
    result = run(["list", "--client-config", str(config)], env)
    assert result.exit_code == EXIT_CONFIG
    assert_one_line_error(result, "unknown key 'colour'")
    missing = run(["list", "--client-config", str(tmp_path / "nope.toml")], env)
    assert_one_line_error(missing, "does not exist")


def test_bad_server_address(env: dict[str, str]) -> None:
    result = run(["list", "--server", "host:port"], env)
    assert_one_line_error(result, "is not HOST:PORT")


# --- the table ----------------------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_every_status_maps_to_one_line(code: grpc.StatusCode) -> None:
    error = from_rpc_error(FakeRpcError(code, "detail text"), "h:1")
    assert error.message and "\n" not in error.message
    assert error.exit_code != 0
    if code in STATUS_TABLE and code is not grpc.StatusCode.UNAVAILABLE:
        assert error.exit_code == STATUS_TABLE[code][1]
