"""The ``https`` plugin: reads ``[plugins.https]`` and offers the HTTPS transport to ``worker serve``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker_core.plugin import Config, ConfigError, PluginError, hookimpl
from worker_plugins.grpc_transport.address import parse_listen

from .config import HttpsConfig
from .tls import TlsFiles

if TYPE_CHECKING:
    from worker_core.plugin import Engine

    from .server import HttpsListener

# .server and the modules under it import aiohttp, an optional dependency: they are imported
# where used, since every `worker` command loads this plugin (to list it, to register
# commands) and most never serve.


def _require_aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise PluginError(
            "https: the 'aiohttp' package is not installed "
            "(pip install 'aiohttp>=3.9', or worker's 'https' extra)"
        ) from None


class HttpsTransport:
    """The HTTPS transport plugin (JSON API, Server-Sent Events, web console).

    ``worker serve --plugins https`` runs it beside the gRPC transport (``no:grpc``: alone).
    ``config`` holds its validated section once configured.
    """

    name = "https"
    config_class = HttpsConfig

    def __init__(self) -> None:
        self.config = HttpsConfig()
        self._source = Config()
        #: The listener offered to serve (for diagnostics: its app, its port).
        self.listener: HttpsListener | None = None

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        # Raises ConfigError naming the key (``... @ $.plugins.https.listen``) on a bad section.
        self.config = config.section("https", HttpsConfig)
        self._source = config  # TLS paths are relative to its file
        try:
            parse_listen(self.config.listen)
        except ConfigError as exc:
            raise ConfigError(f"plugins.https.listen: {exc}") from None
        _require_aiohttp()

    def tls_files(self) -> TlsFiles:
        """The configured CA, certificate and key; relative paths from the config file's."""
        resolve = self._source.resolve_path
        return TlsFiles(
            resolve(self.config.ca), resolve(self.config.cert), resolve(self.config.key)
        )

    @hookimpl
    def serve_transports(self) -> HttpsListener:
        # The TLS files are read and checked here, before the engine starts: a wrong path or
        # a swapped file is one line and no job ever ran.
        from .server import HttpsListener
        from .tls import server_context

        self.listener = HttpsListener(
            self.config, server_context(self.tls_files(), self.config.min_tls)
        )
        return self.listener
