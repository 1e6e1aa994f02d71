"""``worker plugins``: what is installed, what would be enabled, and what each one hooks."""

from __future__ import annotations

import json

import click

from worker_core.plugin import (
    DEFAULT_PLUGINS,
    PluginError,
    config_reference,
    hookimpl,
    installed_plugins,
    parse_plugin_names,
    plugin_hooks,
)


def describe_plugins(enable: str) -> list[dict[str, object]]:
    """One row per installed plugin: name, source, enabled, hooks, and any load error."""
    enabled = set(parse_plugin_names(enable))
    rows: list[dict[str, object]] = []
    for name, info in sorted(installed_plugins().items()):
        row: dict[str, object] = {
            "name": name,
            "enabled": name in enabled,
            "default": name in DEFAULT_PLUGINS,
            "distribution": info.distribution,
            "version": info.version,
            "object": info.value,
            "hooks": [],
            "error": None,
        }
        try:
            row["hooks"] = plugin_hooks(name)
        except PluginError as exc:
            row["error"] = str(exc)
        rows.append(row)
    unknown = enabled - {str(r["name"]) for r in rows}
    for name in sorted(unknown):
        rows.append(
            {
                "name": name,
                "enabled": True,
                "default": False,
                "distribution": None,
                "version": None,
                "object": None,
                "hooks": [],
                "error": f"unknown plugin {name!r}: not installed",
            }
        )
    return rows


@click.command(
    "plugins",
    short_help="List installed plugins, where each comes from and which hooks it implements.",
)
@click.option(
    "-p",
    "--plugins",
    "enable",
    default="",
    metavar="NAMES",
    help="Mark these as enabled, as `worker serve --plugins NAMES` would.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--config-reference",
    "show_reference",
    is_flag=True,
    help="Print every configuration section (engine and installed plugins) with defaults.",
)
def plugins_command(enable: str, as_json: bool, show_reference: bool) -> None:
    """List installed plugins (built-in and third-party), where each comes from, which are
    enabled, and which hooks each implements. A plugin that fails to load shows why."""
    if show_reference:
        click.echo(config_reference(), nl=False)
        return
    rows = describe_plugins(enable)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            mark = "*" if row["enabled"] else " "
            source = f"{row['distribution']} {row['version']}" if row["distribution"] else "-"
            click.echo(f"{mark} {row['name']:<12} {source:<22} {row['object'] or ''}")
            if row["error"]:
                click.echo(f"    error: {row['error']}")
            elif row["hooks"]:
                click.echo(f"    hooks: {', '.join(row['hooks'])}")  # type: ignore[arg-type]
        click.echo("\n* enabled (defaults plus --plugins)")
    if any(row["error"] for row in rows if row["enabled"]):
        raise SystemExit(1)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(plugins_command)
