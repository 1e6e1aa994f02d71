"""The ``worker`` program: a click group whose commands all come from plugins.

``serve`` (the engine and its transports), ``job`` (the remote client), ``run`` (a local
job), ``certs`` and ``plugins`` are each registered by a built-in plugin through the
``register_commands`` hook, the same way a third-party plugin adds its own.

Start-up imports only what the command run needs. The built-in commands are known by name
(:data:`BUILTIN_COMMANDS`, with where each is defined): ``worker --help`` lists them without
importing any, and running one imports that command and nothing else: no entry-point scan,
no plugin manager (pluggy), none of the model's attrs classes, so ``worker job get`` costs
little more than gRPC's own import. A test holds the table to what the built-in plugins
register. Third-party plugins are loaded, through their entry points and a plugin manager,
when the list of commands is needed (``--help``, completion) or a command is not a built-in
one; ``worker plugins`` loads and reports every plugin.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Iterable
from typing import NamedTuple, NoReturn

import click

from ._errors import PluginError
from ._interrupts import redeliver_swallowed_stops
from ._logs import LOG_FORMATS, configure_logging


class BuiltinCommand(NamedTuple):
    """A command a built-in plugin adds, as ``worker`` finds it without loading the plugin."""

    #: The plugin (entry-point name) whose ``register_commands`` adds the command.
    plugin: str
    #: Where the command is defined, ``module:attribute`` (the object the plugin adds).
    command: str
    #: The command's own short help (a test keeps the two the same).
    summary: str


#: The commands of the built-in plugins, by name: listing them imports nothing, and running
#: one imports only the command (a test checks that each is what its plugin registers).
BUILTIN_COMMANDS: dict[str, BuiltinCommand] = {
    "certs": BuiltinCommand(
        "certs",
        "worker_plugins.certs.commands:certs_group",
        "Make the CA and the certificates for mutual TLS.",
    ),
    "job": BuiltinCommand(
        "jobcli",
        "worker_plugins.cli.job.group:job_group",
        "Submit, inspect, stop and follow jobs on a worker server (over mutual TLS).",
    ),
    "plugins": BuiltinCommand(
        "inspect",
        "worker_plugins.cli.plugins:plugins_command",
        "List installed plugins, where each comes from and which hooks it implements.",
    ),
    "run": BuiltinCommand(
        "local",
        "worker_plugins.cli.run:run_command",
        "Run a command as a confined job here and stream its output.",
    ),
    "serve": BuiltinCommand(
        "serve",
        "worker_plugins.serve.command:serve_command",
        "Serve the job API over mutual TLS until SIGTERM or SIGINT.",
    ),
}


def builtin_command(name: str) -> click.Command:
    """Import the built-in command ``name`` (of :data:`BUILTIN_COMMANDS`) from where it is
    defined."""
    module, _, attribute = BUILTIN_COMMANDS[name].command.partition(":")
    command: click.Command = getattr(importlib.import_module(module), attribute)
    return command


class PluginCommands(click.Group):
    """A group whose commands plugins add through ``register_commands``, each loaded when
    first needed rather than all at start-up.

    A built-in command is imported from where :data:`BUILTIN_COMMANDS` says, and nothing
    else is. Listing the commands (``--help``, shell completion) or a name no built-in has
    loads every third-party plugin, so their commands are listed and run as before. A plugin
    that fails to load is reported on stderr and skipped, so one broken third-party plugin
    cannot take the whole command line down (``worker plugins`` shows the error).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._registered: set[str] = set()

    def register_plugins(self, names: Iterable[str]) -> None:
        """Load these plugins (each once) and let them add their commands to this group."""
        pending = [name for name in names if name not in self._registered]
        if not pending:
            return
        self._registered.update(pending)
        # Imported here: loading plugins takes pluggy and attrs, which a built-in command
        # does not need.
        from . import _plugins as plugin_loading

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
        from ._plugins import DISTRIBUTION, installed_plugins

        self.register_plugins(
            name for name, info in installed_plugins().items() if info.distribution != DISTRIBUTION
        )

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.register_third_party()
        return sorted({*self.commands, *BUILTIN_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in BUILTIN_COMMANDS:
                self.add_command(builtin_command(cmd_name), cmd_name)
            else:
                self.register_third_party()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a built-in command not imported yet is listed from its summary."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                # Shortened as click shortens a loaded command's help.
                summary = BUILTIN_COMMANDS[name].summary
                rows.append((name, click.Command(name, help=summary).get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version``: the distribution's version (``importlib.metadata``, read only then)."""
    if not value or ctx.resilient_parsing:
        return
    import importlib.metadata

    from ._plugins import DISTRIBUTION

    click.echo(f"worker {importlib.metadata.version(DISTRIBUTION)}", color=ctx.color)
    ctx.exit()


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
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
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
    """The ``worker`` group. Its commands load when a command needs them (see
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
    # A Ctrl-C that lands in a finalizer during start-up would otherwise be lost.
    redeliver_swallowed_stops()
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
