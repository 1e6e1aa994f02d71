"""A config file with a mistake: the error names the file, the line and the key, every problem
at once; a configuration built in code keeps naming the key as ``... @ $.path``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker_core import Config, ConfigError, Engine, EngineSettings
from worker_core._toml_errors import TomlProblem, find_line
from worker_plugins.cgroups.config import CgroupsConfig
from worker_plugins.runas import RunAsConfig

SERVER_TOML = """\
# A server configuration with a typo in it.

[engine]
stop_grace = 5.0

[plugins.cgroups]
default_pids_max = "1024"
parent = "worker"
"""


def write(directory: Path, text: str, name: str = "server.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load_error(path: Path | str) -> str:
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    return str(info.value)


def test_a_plugin_key_of_the_wrong_type_names_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.load(write(tmp_path, SERVER_TOML))
    with pytest.raises(ConfigError) as info:
        config.section("cgroups", CgroupsConfig)
    assert str(info.value) == (
        "server.toml:7: plugins.cgroups.default_pids_max: expected int, got str '1024'"
    )


def test_the_file_is_named_by_its_full_path_outside_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SERVER_TOML)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError) as info:
        Config.load(path).section("cgroups", CgroupsConfig)
    assert str(info.value).startswith(f"{path}:7: plugins.cgroups.default_pids_max: ")


def test_an_engine_started_from_the_file_reports_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin validates its section when the engine is built: nothing is started.
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, '[plugins.runas]\nallow_root = true\ndefault_uid = "1000"\n')
    config = Config.load(path)
    with pytest.raises(ConfigError) as info:
        Engine(["runas"], config)
    assert (
        str(info.value) == "server.toml:3: plugins.runas.default_uid: expected int, got str '1000'"
    )


def test_every_problem_of_the_engine_section_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = (
        "[engine]\n"
        'stop_grace = "10"\n'
        "kill_timout = 5\n"
        "output_linger = -1.0\n"
        "\n"
        "[servr]\n"
        'listen = "x"\n'
    )
    lines = load_error(write(tmp_path, text)).splitlines()
    assert lines[0] == "server.toml:6: servr: unknown key 'servr' (expected: engine, plugins)"
    assert lines[1] == "server.toml:2: engine.stop_grace: expected float, got str '10'"
    assert lines[2].startswith("server.toml:3: engine.kill_timout: unknown key 'kill_timout' ")
    assert "kill_timeout" in lines[2]
    assert len(lines) == 3, "a validator runs once the types are right: fixed in the next pass"


def test_a_validator_message_is_kept_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = load_error(write(tmp_path, "[engine]\nstop_grace = 1.0\noutput_linger = -1.0\n"))
    # attrs validators run after every field is structured: the problem is the table's.
    assert message == "server.toml:1: engine: output_linger must be >= 0, got -1.0"


def test_dotted_and_quoted_keys_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = '[engine]\nstop_grace = 1.0\n\n[plugins]\ncgroups.parent = "w"\n"cgroups".root = 5\n'
    with pytest.raises(ConfigError) as info:
        Config.load(write(tmp_path, text)).section("cgroups", CgroupsConfig)
    assert str(info.value) == "server.toml:6: plugins.cgroups.root: expected str, got int 5"


def test_a_plugin_section_that_is_not_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = load_error(write(tmp_path, '[engine]\n\n[plugins]\nrbac = "policy.toml"\n'))
    assert message == "server.toml:4: plugins.rbac: must be a table: [plugins.rbac]"


def test_a_good_file_loads_with_its_text(tmp_path: Path) -> None:
    text = "[engine]\nstop_grace = 3.0\n\n[plugins.runas]\nallow_root = false\n"
    config = Config.load(write(tmp_path, text))
    assert config.engine == EngineSettings(stop_grace=3.0)
    assert config.section("runas", RunAsConfig) == RunAsConfig(allow_root=False)
    assert config.source == tmp_path / "server.toml"
    assert config.source_text == text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[engine]\nstop_grace = 1.0\n\xff\n", "the config file is not UTF-8 text"),
        (b"[engine\n", "Expected ']'"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "server.toml"
    path.write_bytes(content)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such config file"
    assert load_error(tmp_path) == f"{tmp_path}: cannot read the config file: Is a directory"


def test_a_configuration_built_in_code_names_the_key_as_before() -> None:
    # Plugin authors' tests match this form (docs/PLUGIN_GUIDE.md): it stays.
    config = Config.from_mapping({"plugins": {"cgroups": {"default_pids_max": "1024"}}})
    with pytest.raises(ConfigError) as info:
        config.section("cgroups", CgroupsConfig)
    assert str(info.value) == "expected int, got str '1024' @ $.plugins.cgroups.default_pids_max"


def test_the_line_finder_points_at_an_item_of_a_multiline_array() -> None:
    text = "[a]\nxs = [\n  'one',\n  \"two\",\n]\nnext = 1\n"
    assert find_line(text, TomlProblem(("a", "xs", 1), "bad", "two")) == 4
    assert find_line(text, TomlProblem(("a", "xs", 0), "bad", "one")) == 3
    assert find_line(text, TomlProblem(("a", "next"), "bad", 1)) == 6
    assert find_line(text, TomlProblem(("b",), "missing")) is None


def test_worker_run_prints_the_line_of_a_config_mistake(tmp_path: Path) -> None:
    # Through the real command line, as a user meets it: one line, exit 125, no job run.
    write(tmp_path, SERVER_TOML)
    marker = tmp_path / "ran"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("worker")),
            "run",
            "--plugins",
            "cgroups",
            "--config",
            "server.toml",
            "--",
            "touch",
            str(marker),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 125, result.stderr
    assert result.stderr == (
        "worker: error: server.toml:7: plugins.cgroups.default_pids_max: "
        "expected int, got str '1024'\n"
    )
    assert not marker.exists()
