"""How `worker serve` combines its flags, the config file and its defaults (no process needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker_core.plugin import Config, WorkerError, installed_plugins
from worker_plugins.serve.command import (
    SERVE_DEFAULT_PLUGINS,
    SERVE_STATE_DIR,
    plugin_names,
    server_config,
)

NO_FLAGS: dict[str, object] = dict.fromkeys(
    ("listen", "ca", "cert", "key", "max_streams_per_client")
)


def _file(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "etc" / "server.toml"
    path.parent.mkdir()
    path.write_text(text)
    return Config.load(path)


def test_grpc_flags_win_over_the_file_and_flag_paths_are_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _file(
        tmp_path,
        '[plugins.grpc]\nlisten = "127.0.0.1:1"\nca = "pki/ca.pem"\nmax_streams_per_client = 3\n',
    )
    monkeypatch.chdir(tmp_path)
    flags = {**NO_FLAGS, "listen": "127.0.0.1:0", "cert": "here/server.pem"}
    config = server_config(loaded, flags, None, grpc_enabled=True)
    grpc = config.plugins["grpc"]
    assert grpc["listen"] == "127.0.0.1:0"
    assert grpc["max_streams_per_client"] == 3  # from the file
    # A flag's relative path is where the command runs; the file's stays relative to it.
    assert grpc["cert"] == str(tmp_path / "here" / "server.pem")
    assert config.resolve_path(grpc["ca"]) == tmp_path / "etc" / "pki" / "ca.pem"


def test_state_dir_flag_then_file_then_serves_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert server_config(Config(), NO_FLAGS, None, True).engine.state_dir == SERVE_STATE_DIR
    loaded = _file(tmp_path, '[engine]\nstate_dir = "state"\n')
    from_file = server_config(loaded, NO_FLAGS, None, True)
    # Relative to the file, as every path in it.
    assert from_file.resolve_path(from_file.engine.state_dir) == tmp_path / "etc" / "state"
    flag = server_config(loaded, NO_FLAGS, "elsewhere", True)
    assert flag.engine.state_dir == str(tmp_path / "elsewhere")


def test_grpc_flags_with_grpc_disabled_are_one_clear_error() -> None:
    with pytest.raises(WorkerError, match="--listen, --max-streams-per-client: the grpc"):
        server_config(
            Config(),
            {**NO_FLAGS, "listen": "127.0.0.1:0", "max_streams_per_client": 2},
            None,
            grpc_enabled=False,
        )


def test_default_plugins_are_servers_where_installed_and_no_name_turns_one_off() -> None:
    installed = installed_plugins()
    expected = [n for n in SERVE_DEFAULT_PLUGINS if n in installed]
    assert "grpc" in expected
    assert plugin_names("") == ["memory", *expected]
    assert plugin_names("cgroups,rbac") == ["memory", *expected, "cgroups", "rbac"]
    assert "grpc" not in plugin_names("no:grpc,rbac")
    assert "memory" not in plugin_names("no:memory")
