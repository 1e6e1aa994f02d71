"""The ``worker`` program: a click group whose commands all come from plugins.

``serve`` (the gRPC transport), ``job`` (the remote client), ``run`` (a local job), ``certs``
and ``plugins`` are each registered by a plugin through the ``register_commands`` hook, the
same way a third-party plugin adds its own.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from . import _plugins as plugin_loading
from ._errors import PluginError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Run confined jobs locally or on a server; follow their output live.

    \b
    Quick start:
      worker run --plugins cgroups,netns -- echo hello
      worker serve --plugins cgroups,netns,rbac --config examples/server.toml
      worker job submit -- sh -c 'echo hi; sleep 1'
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_cli() -> click.Group:
    """Load every installed plugin that adds commands and let it register them.

    A plugin that fails to load is reported on stderr and skipped, so one broken third-party
    plugin cannot take the whole command line down (``worker plugins`` shows the error).
    """
    pm = plugin_loading.make_plugin_manager()
    for name in plugin_loading.installed_plugins():
        try:
            plugin_loading.load_plugins(pm, [name])
        except PluginError as exc:
            if pm.has_plugin(name):
                pm.unregister(name=name)
            click.echo(f"worker: warning: {exc}", err=True)
    plugin_loading.Hooks(pm).register_commands(cli)
    return cli


def main() -> None:
    # gRPC reads its log level once, when first imported (while plugins load): without this
    # a refused TLS handshake prints a C-core log line after our own one-line error.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    group = build_cli()
    sys.exit(group.main(prog_name="worker", standalone_mode=True))
