"""The ``worker`` program: a click group whose commands all come from plugins.

``serve`` (the engine and its transports), ``job`` (the remote client), ``run`` (a local
job), ``certs`` and ``plugins`` are each registered by a plugin through the
``register_commands`` hook, the same way a third-party plugin adds its own.

A plugin is loaded only when one of its commands runs: the built-in commands are known by
name (:data:`BUILTIN_COMMANDS`), so ``worker --help`` and ``worker job get`` import neither
``serve`` nor ``certs``; third-party plugins are loaded when the list of commands is
needed (``--help``) or a command is not a built-in one.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from typing import NamedTuple, NoReturn

import click

from . import _plugins as plugin_loading
from ._errors import PluginError
from ._logs import LOG_FORMATS, configure_logging


class BuiltinCommand(NamedTuple):
    """A command a built-in plugin adds, as ``worker --help`` lists it before loading it."""

    #: The plugin (entry-point name) whose ``register_commands`` adds the command.
    plugin: str
    #: The command's own short help (a test keeps the two the same).
    summary: str


#: The distribution whose plugins :data:`BUILTIN_COMMANDS` describes.
BUILTIN_DISTRIBUTION = plugin_loading.DISTRIBUTION

#: The commands of the built-in plugins, by name: listing them loads nothing, and running one
#: loads only its plugin, through its entry point, which registers it as any plugin does.
BUILTIN_COMMANDS: dict[str, BuiltinCommand] = {
    "certs": BuiltinCommand("certs", "Make the CA and the certificates for mutual TLS."),
    "job": BuiltinCommand(
        "jobcli", "Submit, inspect, stop and follow jobs on a worker server (over mutual TLS)."
    ),
    "plugins": BuiltinCommand(
        "inspect", "List installed plugins, where each comes from and which hooks it implements."
    ),
    "run": BuiltinCommand("local", "Run a command as a confined job here and stream its output."),
    "serve": BuiltinCommand("serve", "Serve the job API over mutual TLS until SIGTERM or SIGINT."),
}


class PluginCommands(click.Group):
    """A group whose commands plugins add through ``register_commands``, each plugin loaded
    when first needed rather than all at start-up.

    A built-in command loads its own plugin and nothing else. Listing the commands
    (``--help``, shell completion) or a name no built-in has loads every third-party plugin,
    so their commands are listed and run as before. A plugin that fails to load is reported
    on stderr and skipped, so one broken third-party plugin cannot take the whole command
    line down (``worker plugins`` shows the error).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._registered: set[str] = set()

    def _builtin(self, name: str) -> BuiltinCommand | None:
        """The built-in command ``name`` if its plugin is installed (and is the built-in one)."""
        command = BUILTIN_COMMANDS.get(name)
        if command is None:
            return None
        info = plugin_loading.installed_plugins().get(command.plugin)
        return command if info and info.distribution == BUILTIN_DISTRIBUTION else None

    def register_plugins(self, names: Iterable[str]) -> None:
        """Load these plugins (each once) and let them add their commands to this group."""
        pending = [name for name in names if name not in self._registered]
        if not pending:
            return
        self._registered.update(pending)
        pm = plugin_loading.make_plugin_manager()
        for name in pending:
            try:
                plugin_loading.load_plugins(pm, [name])
            except PluginError as exc:
                if pm.has_plugin(name):
                    pm.unregister(name=name)
                click.echo(f"worker: warning: {exc}", err=True)
        plugin_loading.Hooks(pm).register_commands(self)

    def register_third_party(self) -> None:
        """Load every installed plugin that is not a built-in one (they may add commands)."""
        installed = plugin_loading.installed_plugins()
        self.register_plugins(
            name for name, info in installed.items() if info.distribution != BUILTIN_DISTRIBUTION
        )

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.register_third_party()
        builtins = [name for name in BUILTIN_COMMANDS if self._builtin(name)]
        return sorted({*self.commands, *builtins})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            builtin = self._builtin(cmd_name)
            if builtin is not None:
                self.register_plugins([builtin.plugin])
            if cmd_name not in self.commands:
                self.register_third_party()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a built-in command not loaded yet is listed from its summary."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            elif (builtin := self._builtin(name)) is not None:
                # Shortened as click shortens a loaded command's help.
                summary = click.Command(name, help=builtin.summary).get_short_help_str(limit)
                rows.append((name, summary))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=PluginCommands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    envvar="WORKER_LOG_FORMAT",
    show_default=True,
    show_envvar=True,
    help="Log lines on stderr as text or as JSON objects, one a line.",
)
@click.version_option(
    package_name=plugin_loading.DISTRIBUTION, prog_name="worker", message="%(prog)s %(version)s"
)
def cli(verbose: int, log_format: str) -> None:
    """Run confined jobs locally or on a server; follow their output live.

    \b
    Quick start:
      worker run --plugins cgroups,netns -- echo hello
      worker serve --plugins cgroups,netns,rbac --config examples/server.toml
      worker job submit -- sh -c 'echo hi; sleep 1'
    """
    configure_logging(verbose, log_format)


def build_cli() -> click.Group:
    """The ``worker`` group. Its commands' plugins load when a command needs them (see
    :class:`PluginCommands`), so building it imports no plugin."""
    return cli


#: The exit status after Ctrl-C, as a shell reports a command that SIGINT ended (128 + 2).
EXIT_INTERRUPTED = 130


def main() -> NoReturn:
    """Run the ``worker`` program. Ctrl-C at any moment ends it with status 130, no traceback.

    Commands that stop something on Ctrl-C (``run``, ``job tail``, ``serve``) handle it
    themselves; anywhere else, start-up included (loading plugins imports a lot), the
    KeyboardInterrupt ends up here.
    """
    try:
        # gRPC reads its log level once, when first imported (while plugins load): its own
        # log stays off, since every failure it would report (a refused handshake, a port in
        # use) reaches the user as our one-line message. GRPC_VERBOSITY=ERROR shows it.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        group = build_cli()
        status: int | str | None = _run(group)
    except KeyboardInterrupt:
        _exit_interrupted()
    except SystemExit as exc:  # a command's sys.exit(code)
        status = exc.code
    # From here on (flushing output, joining threads at exit) a Ctrl-C kills the process at
    # once, which the shell reports as status 130 too, rather than raising in the middle of
    # the interpreter's shutdown.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(status)


def _run(group: click.Group) -> int:
    """``group.main`` without click's own handling of Ctrl-C (an ``Aborted!`` and status 1)."""
    try:
        result = group.main(prog_name="worker", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise exc.__cause__ from None
        click.echo("Aborted!", err=True)  # end of input at a prompt
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


def _exit_interrupted() -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C while exiting: gone at once
    sys.exit(EXIT_INTERRUPTED)
