"""Where ``worker job`` connects: flags, then environment, then the client config, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from job_cli_harness import write_client_config

from worker_plugins.cli.job.connection import (
    ConnectionFlags,
    normalize_server,
    resolve,
)
from worker_plugins.cli.job.errors import EXIT_CONFIG, ClientError

ENV = {
    "WORKER_SERVER": "env-host:2",
    "WORKER_CA": "/env/ca.pem",
    "WORKER_CERT": "/env/cert.pem",
    "WORKER_KEY": "/env/key.pem",
}


def test_flags_win_over_everything(tmp_path: Path) -> None:
    config = write_client_config(tmp_path / "c.toml", server="file-host:3", ca="ca.pem")
    flags = ConnectionFlags("flag-host:1", "/f/ca", "/f/cert", "/f/key", str(config))
    settings = resolve(flags, ENV)
    assert settings.server == "flag-host:1"
    assert (settings.tls.ca, settings.tls.cert, settings.tls.key) == ("/f/ca", "/f/cert", "/f/key")


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = write_client_config(tmp_path / "c.toml", server="file-host:3", ca="ca.pem")
    settings = resolve(ConnectionFlags(client_config=str(config)), ENV)
    assert settings.server == "env-host:2"
    assert settings.tls.ca == "/env/ca.pem"


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = write_client_config(
        tmp_path / "conf" / "client.toml",
        server="file-host:3",
        ca="certs/ca.pem",
        cert="/abs/alice.pem",
        key="alice.key",
    )
    settings = resolve(ConnectionFlags(client_config=str(config)), {})
    assert settings.server == "file-host:3"
    assert settings.tls.ca == str(tmp_path / "conf" / "certs" / "ca.pem")
    assert settings.tls.cert == "/abs/alice.pem"
    assert settings.tls.key == str(tmp_path / "conf" / "alice.key")


def test_config_file_from_the_environment_and_the_default_place(tmp_path: Path) -> None:
    named = write_client_config(tmp_path / "named.toml", ca="a", cert="b", key="c")
    settings = resolve(ConnectionFlags(), {"WORKER_CLIENT_CONFIG": str(named)})
    assert settings.tls.ca == str(tmp_path / "a")
    write_client_config(tmp_path / "xdg" / "worker" / "client.toml", ca="a", cert="b", key="c")
    settings = resolve(ConnectionFlags(), {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert settings.tls.key == str(tmp_path / "xdg" / "worker" / "c")


def test_defaults_and_the_missing_certificate_message(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}  # no client.toml there: that is fine
    settings = resolve(ConnectionFlags(ca="/x/ca", cert="/x/c", key="/x/k"), env)
    assert settings.server == "127.0.0.1:50051"
    with pytest.raises(ClientError) as info:
        resolve(ConnectionFlags(ca="/x/ca", key="/x/k"), env)
    assert info.value.exit_code == EXIT_CONFIG
    assert "no client certificate configured: pass --cert or set WORKER_CERT" in str(info.value)


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("example.com", "example.com:50051"),
        ("example.com:443", "example.com:443"),
        ("10.0.0.1:5", "10.0.0.1:5"),
        ("[::1]", "[::1]:50051"),
        ("[::1]:7000", "[::1]:7000"),
    ],
)
def test_server_addresses(given: str, target: str) -> None:
    assert normalize_server(given) == target


@pytest.mark.parametrize("given", ["", "host:", "host:http", "::1", "[::1]x", "h:70000", ":5"])
def test_bad_server_addresses(given: str) -> None:
    with pytest.raises(ClientError, match="is not HOST:PORT"):
        normalize_server(given)


def test_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("server = \n")
    with pytest.raises(ClientError, match="is not valid TOML"):
        resolve(ConnectionFlags(client_config=str(bad)), {})
