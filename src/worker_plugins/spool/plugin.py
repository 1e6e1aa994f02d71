"""The ``spool`` plugin object: reads ``[plugins.spool]`` and provides the spool output store.

Enable it with ``--plugins spool`` and a state directory (``--state-dir`` or ``[engine]
state_dir``); it answers ``output_store`` before the built-in ``memory`` store (which answers
last), so every job's output goes to ``STATE/output/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker_core.plugin import Config, ConfigError, hookimpl

from .config import SpoolConfig
from .store import SpoolOutputStore

if TYPE_CHECKING:
    from worker_core.plugin import Engine

NO_STATE_DIR = (
    "plugins.spool: the spool keeps output in files under the state directory; "
    "give one with --state-dir or [engine] state_dir"
)


class SpoolPlugin:
    """Provides :class:`~.store.SpoolOutputStore` under ``STATE/output``."""

    name = "spool"
    config_class = SpoolConfig

    def __init__(self) -> None:
        self.config = SpoolConfig()
        self.store: SpoolOutputStore | None = None

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        self.config = config.section("spool", SpoolConfig)
        if engine.state_dir is None:
            raise ConfigError(NO_STATE_DIR)

    @hookimpl
    def output_store(self, engine: Engine) -> SpoolOutputStore:
        state_dir = engine.state_dir
        if state_dir is None:
            raise ConfigError(NO_STATE_DIR)
        if self.store is None:
            try:
                self.store = SpoolOutputStore(state_dir / "output", self.config)
            except OSError as exc:
                raise ConfigError(
                    f"plugins.spool: cannot use {state_dir / 'output'}: {exc}"
                ) from exc
        return self.store

    @hookimpl
    def shutdown(self, engine: Engine) -> None:
        if self.store is not None:
            self.store.shutdown()
