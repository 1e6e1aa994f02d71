"""The ``sqlite`` plugin: job records in an SQLite database under the state directory.

:mod:`.store` is the :class:`~worker_core.plugin.JobStore`, :mod:`.database` opens (or
refuses) the file, :mod:`.schema` holds the schema and its migrations, :mod:`.config` the
``[plugins.sqlite]`` settings and :mod:`.plugin` the hooks.
"""

from __future__ import annotations

from .config import SqliteConfig
from .database import DatabaseRefused
from .plugin import DATABASE_NAME, SqlitePlugin
from .schema import MIGRATIONS, SCHEMA_VERSION, Migration
from .store import SqliteJobStore

__all__ = [
    "DATABASE_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DatabaseRefused",
    "Migration",
    "SqliteConfig",
    "SqliteJobStore",
    "SqlitePlugin",
]
