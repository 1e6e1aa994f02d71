"""The ``sqlite`` plugin object: reads ``[plugins.sqlite]`` and provides the job store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker_core.plugin import Config, ConfigError, hookimpl

from .config import SqliteConfig
from .store import SqliteJobStore

if TYPE_CHECKING:
    from worker_core.plugin import Engine

#: The database's file name inside the state directory.
DATABASE_NAME = "jobs.sqlite3"


class SqlitePlugin:
    """Keeps job records in ``<state_dir>/jobs.sqlite3`` (:class:`SqliteJobStore`), so they
    outlive the process. Needs a state directory (``--state-dir`` or ``[engine] state_dir``).
    """

    config_class = SqliteConfig

    def __init__(self) -> None:
        self.config = SqliteConfig()

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        self.config = config.section("sqlite", SqliteConfig)

    @hookimpl
    def job_store(self, engine: Engine) -> SqliteJobStore:
        state_dir = engine.state_dir
        if state_dir is None:
            raise ConfigError(
                "the sqlite job store needs a state directory (--state-dir or [engine] state_dir)"
            )
        return SqliteJobStore(state_dir / DATABASE_NAME, self.config)
