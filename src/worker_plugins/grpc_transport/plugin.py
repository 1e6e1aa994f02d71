"""The ``grpc`` plugin: reads ``[plugins.grpc]`` and offers the gRPC transport to ``worker serve``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker_core.plugin import Config, hookimpl

from .address import parse_listen
from .config import GrpcConfig

if TYPE_CHECKING:
    from worker_core.plugin import Engine

    from .server import GrpcListener
    from .tls import TlsFiles

# .tls and .server import grpc, so they are imported where used: every `worker` command loads
# this plugin (to list it, to register commands) and most never need gRPC.


class GrpcTransport:
    """The gRPC transport plugin. ``config`` holds its validated section once configured.

    ``worker serve`` loads it by default (``no:grpc`` turns it off); its flags ``--listen``,
    ``--ca``, ``--cert``, ``--key`` and ``--max-streams-per-client`` override the section.
    """

    name = "grpc"
    config_class = GrpcConfig

    def __init__(self) -> None:
        self.config = GrpcConfig()
        self._source = Config()

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        # Raises ConfigError naming the key (``... @ $.plugins.grpc.listen``) on a bad section.
        self.config = config.section("grpc", GrpcConfig)
        self._source = config  # TLS paths are relative to its file
        parse_listen(self.config.listen)

    def tls_files(self) -> TlsFiles:
        """The configured CA, certificate and key; relative paths from the config file's."""
        from .tls import TlsFiles

        resolve = self._source.resolve_path
        return TlsFiles(
            resolve(self.config.ca), resolve(self.config.cert), resolve(self.config.key)
        )

    @hookimpl
    def serve_transports(self) -> GrpcListener:
        # Read and checked here, before the engine starts: a wrong path or a swapped file is
        # one line and no job ever ran.
        from .server import GrpcListener
        from .tls import load_material

        material = load_material(self.tls_files())
        return GrpcListener(self.config, material)
