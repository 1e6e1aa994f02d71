"""``worker serve``: run the engine behind the mTLS gRPC server until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import click

from worker_core.plugin import (
    Config,
    WorkerError,
    config_reference,
    parse_plugin_names,
    release_if_free_above,
    tune_allocator_for_streaming,
)

from .cipher_policy import policy_in_force
from .config import GrpcConfig
from .plugin import GrpcTransport
from .server import GrpcServer, parse_listen
from .tls import TlsFiles, load_material

if TYPE_CHECKING:
    from worker_core.plugin import Engine

#: Seconds the gRPC server gives open calls to finish once every job has ended.
SERVER_STOP_GRACE = 2.0

#: How often the server looks at the memory its allocator holds free, and how much it keeps:
#: past that, the free part goes back to the kernel (see worker_core.plugin.tune_allocator_for_streaming).
HOUSEKEEPING_SECONDS = 10.0
FREE_MEMORY_KEPT = 256 << 20


#: Set in the environment of a re-executed ``serve`` so it re-executes at most once.
_REEXEC_MARK = "WORKER_SERVE_REEXEC"


def _ensure_cipher_policy() -> None:
    """Re-execute this process if ``grpc`` was imported before the cipher policy was set.

    gRPC reads ``GRPC_SSL_CIPHER_SUITES`` only when it is imported; another plugin loaded by
    ``worker`` before this one may have imported it first. The new process inherits the
    variable, so its gRPC starts with the policy.
    """
    if policy_in_force():
        return
    if os.environ.get(_REEXEC_MARK):
        click.echo("worker serve: warning: the TLS 1.2 cipher policy is not in force", err=True)
        return
    os.environ[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _fail(message: str) -> NoReturn:
    click.echo(f"worker serve: error: {message}", err=True)
    sys.exit(1)


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
    help="Comma-separated plugins to enable, e.g. cgroups,netns,rbac (memory is always on).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (TOML); [plugins.grpc] sets the defaults of the options below.",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Address to listen on. [default: 127.0.0.1:50051; port 0 picks a free one]",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    help="CA that client certificates must chain to. [default: certs/ca.pem]",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False),
    help="The server's certificate (PEM). [default: certs/server.pem]",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False),
    help="The server's private key (PEM). [default: certs/server.key]",
)
@click.option(
    "--max-streams-per-client",
    type=click.IntRange(min=1),
    help="Concurrent Tail/Watch streams per client CN. [default: 64]",
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
    grace: float | None,
    **flags: Any,
) -> None:
    """Serve the job API over mutual TLS until SIGTERM or SIGINT.

    Every client must present a certificate issued by the CA with the clientAuth usage; its
    Common Name is the caller's identity (enable `rbac` to decide what each may do).

    \b
    Examples:
      worker serve --plugins cgroups,netns,rbac --config /etc/worker/server.toml
      worker serve --listen 0.0.0.0:50051 --ca certs/ca.pem \\
          --cert certs/server.pem --key certs/server.key

    On SIGTERM or SIGINT it stops every job (SIGTERM, the grace period, then SIGKILL), lets
    followers read the last output, closes the remaining streams and exits 0.
    TLS 1.2 is limited to ECDHE with AEAD ciphers; grpcio offers no minimum-version setting,
    and its core refuses anything older than TLS 1.2.
    """
    _ensure_cipher_policy()
    # This process is the server's own: large output buffers are kept for reuse (measured:
    # Tail throughput roughly doubles; see worker_core.plugin.tune_allocator_for_streaming).
    tune_allocator_for_streaming()
    transport = GrpcTransport()
    try:
        config = Config.load(config_path) if config_path else Config()
        # The transport object itself joins the engine, so configure validates
        # [plugins.grpc] exactly as for any plugin; a "grpc" name in --plugins is that one.
        names = [n for n in parse_plugin_names(plugins) if n != transport.name]
        # Imported here, not at the top: this module is imported by every `worker` run (to
        # register the command), and only `serve` needs the engine.
        from worker_core.plugin import Engine

        engine = Engine([*names, transport], config)
    except WorkerError as exc:
        _fail(str(exc))
    settings = attrs.evolve(transport.config, **{k: v for k, v in flags.items() if v is not None})
    try:
        host, port = parse_listen(settings.listen)

        # A flag's path is relative to where the command runs; a config file's, to that file.
        def tls_path(key: str) -> Path:
            flag = flags.get(key)
            return Path(flag) if flag else config.resolve_path(getattr(settings, key))

        tls = TlsFiles(tls_path("ca"), tls_path("cert"), tls_path("key"))
        load_material(tls)  # fail on a bad file before any job could start
        engine.start()
    except WorkerError as exc:
        engine.close()
        _fail(str(exc))
    _serve(engine, settings, host, port, tls, grace)


def _serve(
    engine: Engine, settings: GrpcConfig, host: str, port: int, tls: TlsFiles, grace: float | None
) -> None:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server = GrpcServer(engine, settings)
    try:
        try:
            bound = server.start(host, port, tls)
        except WorkerError as exc:
            _fail(str(exc))
        click.echo(f"worker serve: listening on {host}:{bound}", err=True)
        while not stopping.wait(HOUSEKEEPING_SECONDS):
            release_if_free_above(FREE_MEMORY_KEPT)
        click.echo("worker serve: stopping every job...", err=True)
    finally:
        # Jobs first, with the server still up: followers get the final output and their
        # streams end normally. Then the server cancels whatever is still open.
        engine.close(grace)
        server.stop(SERVER_STOP_GRACE)
        for s, handler in previous.items():
            signal.signal(s, handler)
    click.echo("worker serve: stopped", err=True)
