"""The ``grpc`` plugin: reads ``[plugins.grpc]`` and adds the ``worker serve`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker_core.plugin import hookimpl

from .config import GrpcConfig

if TYPE_CHECKING:
    import click

    from worker_core.plugin import Config, Engine


class GrpcTransport:
    """The gRPC transport plugin. ``config`` holds its validated section once configured."""

    #: The name it registers under when passed to an engine as an object (``worker serve``).
    name = "grpc"
    config_class = GrpcConfig

    def __init__(self) -> None:
        self.config = GrpcConfig()

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        # Raises ConfigError naming the key (``... @ $.plugins.grpc.listen``) on a bad section.
        self.config = config.section("grpc", GrpcConfig)

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        from .commands import serve_command

        cli.add_command(serve_command)
