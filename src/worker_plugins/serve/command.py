"""``worker serve``: build one engine from the configuration and run every enabled transport.

The plugin module named by the ``serve`` entry point: it only adds the command. The engine
is built here and nowhere else; transports come from the ``serve_transports`` hook, so the
gRPC transport (on by default) is one plugin among others and a third party can add one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import click

from worker_core.plugin import (
    Config,
    WorkerError,
    config_reference,
    hookimpl,
    installed_plugins,
    parse_plugin_names,
    tune_allocator_for_streaming,
)

from .job_log import JobLog
from .report import say
from .running import serve
from .stops import StopRequests
from .transport import Transport, checked_transports

if TYPE_CHECKING:
    from worker_core.plugin import Engine

#: Plugins ``worker serve`` loads besides the engine's own defaults (``memory``): the gRPC
#: transport, and durable state under the state directory (``sqlite`` job records, ``spool``
#: output files). ``no:NAME`` turns one off. A default that is not installed is skipped, so
#: serve runs while one is being written and in a build that leaves one out.
# runas: a server's jobs run as an unprivileged identity unless its configuration says
# otherwise (root refused unless [plugins.runas] allow_root = true).
SERVE_DEFAULT_PLUGINS: tuple[str, ...] = ("grpc", "sqlite", "spool", "runas")

#: ``[engine] state_dir`` for serve when neither ``--state-dir`` nor the config file sets it.
SERVE_STATE_DIR = "/var/lib/worker"

#: Flags that override the ``[plugins.grpc]`` key of the same name.
GRPC_FLAGS = ("listen", "ca", "cert", "key", "max_streams_per_client")
_PATH_FLAGS = frozenset({"ca", "cert", "key"})


def _fail(message: str) -> NoReturn:
    say(f"error: {message}", logging.ERROR)
    sys.exit(1)


def default_plugins() -> list[str]:
    """:data:`SERVE_DEFAULT_PLUGINS` that are installed."""
    installed = installed_plugins()
    return [name for name in SERVE_DEFAULT_PLUGINS if name in installed]


def plugin_names(requested: str) -> list[str]:
    """Every plugin serve loads: the engine's defaults, serve's, then ``--plugins``."""
    return parse_plugin_names([*default_plugins(), *requested.split(",")])


def server_config(
    config: Config, grpc_flags: Mapping[str, Any], state_dir: str | None, grpc_enabled: bool
) -> Config:
    """``config`` with the command line's settings over it: flags win over the file.

    A flag's path is relative to where the command runs, a file's to that file, so flag
    paths are made absolute before they join the configuration.
    """
    given = {key: value for key, value in grpc_flags.items() if value is not None}
    if given and not grpc_enabled:
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        raise WorkerError(f"{flags}: the grpc transport is disabled (no:grpc)")
    plugins = dict(config.plugins)
    if given:
        section = dict(plugins.get("grpc", {}))
        for key, value in given.items():
            section[key] = str(Path(value).absolute()) if key in _PATH_FLAGS else value
        plugins["grpc"] = section
    if state_dir is not None:
        directory: str | None = str(Path(state_dir).absolute())
    else:
        directory = config.engine.state_dir or SERVE_STATE_DIR
    engine = attrs.evolve(config.engine, state_dir=directory)
    return attrs.evolve(config, engine=engine, plugins=plugins)


class _ServeCommand(click.Command):
    """``serve``, whose help ends with every configuration section of the installed plugins.

    Built when the help is shown, not at import: the list is whatever is installed now.
    """

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text("Configuration file (--config FILE), every section with its defaults:")
        formatter.write_paragraph()
        with formatter.indentation():
            for line in config_reference().splitlines():
                formatter.write(" " * formatter.current_indent + line + "\n")


@click.command("serve", cls=_ServeCommand)
@click.option(
    "-p",
    "--plugins",
    default="",
    metavar="NAMES",
    help="Comma-separated plugins to enable, e.g. cgroups,netns,rbac. Always on unless "
    f"turned off with no:NAME: memory, and {', '.join(SERVE_DEFAULT_PLUGINS)} where "
    "installed (no:grpc turns the gRPC transport off).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (TOML); its sections set the defaults of the options below.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Directory of the server's durable state (job records, output), made 0700. "
    f"[default: [engine] state_dir, else {SERVE_STATE_DIR}]",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="gRPC: address to listen on. [default: 127.0.0.1:50051; port 0 picks a free one]",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    help="gRPC: CA that client certificates must chain to. [default: certs/ca.pem]",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False),
    help="gRPC: the server's certificate (PEM). [default: certs/server.pem]",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False),
    help="gRPC: the server's private key (PEM). [default: certs/server.key]",
)
@click.option(
    "--max-streams-per-client",
    type=click.IntRange(min=1),
    help="gRPC: concurrent Tail/Watch streams per client CN. [default: 64]",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="On shutdown, seconds between SIGTERM and SIGKILL for running jobs. "
    "[default: the engine's stop_grace]",
)
def serve_command(
    plugins: str,
    config_path: str | None,
    state_dir: str | None,
    grace: float | None,
    **grpc_flags: Any,
) -> None:
    """Serve the job API over mutual TLS until SIGTERM or SIGINT.

    One engine, with every enabled transport in front of it: gRPC by default. Every client
    must present a certificate issued by the CA with the clientAuth usage; its Common Name
    is the caller's identity (enable `rbac` to decide what each may do; without an
    authorization plugin, serve warns that every certificate holder may do anything).

    \b
    Examples:
      worker serve --plugins cgroups,netns,rbac --config /etc/worker/server.toml
      worker serve --listen 0.0.0.0:50051 --ca certs/ca.pem \\
          --cert certs/server.pem --key certs/server.key --state-dir /srv/worker

    On SIGTERM or SIGINT it stops every job (SIGTERM, the grace period, then SIGKILL), lets
    followers read the last output, closes the remaining streams and exits 0. Under systemd
    (Type=notify) it reports READY=1 once it listens and STOPPING=1 when it begins to stop.
    TLS 1.2 is limited to ECDHE with AEAD ciphers; grpcio offers no minimum-version setting,
    and its core refuses anything older than TLS 1.2.
    """
    stops = StopRequests()
    stops.note_from_now()
    names = plugin_names(plugins)
    if "grpc" in names:
        # Before anything else: it may re-execute this process (see core_env).
        from worker_plugins.grpc_transport.core_env import ensure_core_environment

        stops.check()  # a stop noted now would not survive the exec
        ensure_core_environment()
    # This process is the server's own: large output buffers are kept for reuse instead of
    # being mapped and unmapped for each message (see tune_allocator_for_streaming; figures
    # in bench/README.md).
    tune_allocator_for_streaming()
    try:
        loaded = Config.load(config_path) if config_path else Config()
        config = server_config(loaded, grpc_flags, state_dir, "grpc" in names)
    except WorkerError as exc:
        _fail(str(exc))
    stops.check()
    engine, transports = _build(names, config, stops)
    try:
        serve(engine, transports, grace, stops)
    except WorkerError as exc:
        _fail(str(exc))
    finally:
        engine.close()  # done already unless start-up was cut short (Ctrl-C)


def _build(names: list[str], config: Config, stops: StopRequests) -> tuple[Engine, list[Transport]]:
    """The engine, started, and the transports to run; one line and exit 1 on a problem."""
    # Imported here: this module is imported by every `worker` run (to register the
    # command), and only `serve` needs the engine.
    from worker_core.plugin import Engine

    try:
        # Beside the plugins, serve's own observer: a log line per job event (worker.jobs).
        engine = Engine([*names, JobLog()], config)
    except WorkerError as exc:
        _fail(str(exc))
    try:
        transports = checked_transports(engine.hooks.serve_transports(engine))
        if not transports:
            raise WorkerError(
                "no transport is enabled (the gRPC one is off: no:grpc); "
                "enable one with --plugins NAME"
            )
        stops.check()
        engine.start()
        stops.check()
    except WorkerError as exc:
        engine.close()
        _fail(str(exc))
    except BaseException:
        engine.close()
        raise
    return engine, transports


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(serve_command)
