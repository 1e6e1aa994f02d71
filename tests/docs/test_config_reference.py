"""Every plugin's options are documented where an operator looks: `worker serve --help`,
`worker plugins --config-reference` and docs/CONFIGURATION.md, all generated from the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
from click.testing import CliRunner

from worker_core._config import Config, EngineSettings
from worker_core._plugins import DISTRIBUTION, config_reference, config_sections
from worker_core.cli import build_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
BUILTIN_SECTIONS = {
    "cgroups",
    "grpc",
    "https",
    "memory",
    "metrics",
    "rbac",
    "runas",
    "slurm",
    "spool",
    "sqlite",
}


def test_every_builtin_plugin_with_settings_declares_them() -> None:
    declared = {name for name, _, info in config_sections() if info.distribution == DISTRIBUTION}
    assert declared == BUILTIN_SECTIONS


def test_the_doc_matches_the_code() -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert block, "docs/CONFIGURATION.md has no toml block"
    assert block.group(1) == config_reference(DISTRIBUTION), (
        "regenerate docs/CONFIGURATION.md (see its text)"
    )


def test_the_reference_lists_every_key_with_its_default_and_is_valid_config(
    tmp_path: Path,
) -> None:
    reference = config_reference(DISTRIBUTION)
    for name, cls, _ in config_sections():
        for field in attrs.fields(cls):
            assert re.search(rf"^#? ?{field.name} =", config_reference(), flags=re.M), (
                name,
                field.name,
            )
    for field in attrs.fields(EngineSettings):
        assert re.search(rf"^#? ?{field.name} =", reference, flags=re.M), field.name
    # Required keys are shown as `...`; with them filled in, the reference is a working config.
    filled = reference.replace("policy = ...  # required", 'policy = "policy.toml"')
    config = Config.from_mapping(tomllib.loads(filled))
    assert config.engine == EngineSettings()
    assert set(config.plugins) == BUILTIN_SECTIONS
    # As a file too: what an operator copies into server.toml loads, and each section reads.
    path = tmp_path / "server.toml"
    path.write_text(filled)
    loaded = Config.load(path)
    assert loaded.engine == EngineSettings()
    for name, cls, _ in config_sections():
        if name in BUILTIN_SECTIONS:
            assert loaded.section(name, cls) == config.section(name, cls), name


def test_serve_help_and_plugins_print_it() -> None:
    runner = CliRunner()
    cli = build_cli()
    help_text = runner.invoke(cli, ["serve", "--help"]).output
    for section in ("[engine]", *(f"[plugins.{name}]" for name in BUILTIN_SECTIONS)):
        assert section in help_text
    assert "default_pids_max = 4096" in help_text
    printed = runner.invoke(cli, ["plugins", "--config-reference"])
    assert printed.exit_code == 0
    assert printed.output == config_reference()
