"""The database's schema and its migrations; the version lives in ``PRAGMA user_version``.

Each :class:`Migration` takes the database from the version before it to its own, in one
transaction (SQLite's DDL is transactional: a failed migration leaves the previous version
whole). A database is only ever moved forward; one written by a newer version of this
module is refused, never touched (:func:`check_version`).

To change the schema, append a migration and never edit a released one::

    Migration(2, (
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "UPDATE jobs SET priority = coalesce(json_extract(record, '$.spec.priority'), 0)",
        "CREATE INDEX jobs_priority ON jobs (priority)",
    )),

and teach ``store.py`` the new column. :data:`SCHEMA_VERSION` follows by itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs


@attrs.frozen
class Migration:
    """The statements that take the database to ``version`` from ``version - 1``."""

    version: int
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            # seq: submission order; AUTOINCREMENT so a removed record's number is never
            # handed out again (list cursors stay meaningful across purges).
            """CREATE TABLE jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                owner TEXT,
                state TEXT NOT NULL,
                name TEXT NOT NULL,
                created_at REAL NOT NULL,
                ended_at REAL,  -- NULL unless state is 'ended'
                output_bytes INTEGER NOT NULL DEFAULT 0,
                idempotency_key TEXT,
                record TEXT NOT NULL
            )""",
            # Each index costs every commit that changes its column a page or so, so there is
            # one per filter and no more. Every secondary index ends with the rowid (seq):
            # "owner = ? ORDER BY seq DESC" walks the index and stops at the page size.
            # output_bytes has none: retention reads it from finished rows it walks anyway.
            "CREATE INDEX jobs_owner ON jobs (owner)",
            "CREATE INDEX jobs_state ON jobs (state)",  # also recovery: state IN (not ended)
            "CREATE INDEX jobs_name ON jobs (name)",
            "CREATE INDEX jobs_created_at ON jobs (created_at)",
            # Only finished records have ended_at: ended-time filters and retention's walk,
            # newest first, both read this.
            "CREATE INDEX jobs_finished ON jobs (ended_at, seq) WHERE state = 'ended'",
            # One record per (owner, key). A job without an owner has owner NULL, and NULLs
            # are all distinct in a UNIQUE index: ifnull() maps it to an empty BLOB, a value
            # no TEXT owner name can equal (SQLite never compares a BLOB equal to TEXT).
            """CREATE UNIQUE INDEX jobs_idempotency
                ON jobs (ifnull(owner, x''), idempotency_key)
                WHERE idempotency_key IS NOT NULL""",
            """CREATE TABLE labels (
                job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (job_id, key)
            ) WITHOUT ROWID""",
            "CREATE INDEX labels_pair ON labels (key, value)",
        ),
    ),
)

#: The version this code writes and reads.
SCHEMA_VERSION = MIGRATIONS[-1].version


class SchemaError(Exception):
    """The database's version cannot be used by this code (the message says why)."""


def read_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database (0: none yet)."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def check_version(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The database's version, after refusing one this code cannot use. Reads only."""
    newest = migrations[-1].version
    version = read_version(conn)
    if version > newest:
        raise SchemaError(
            f"written by a newer version of worker (schema version {version}; this version"
            f" reads up to {newest}); refusing to open it: upgrade worker or use another"
            " state directory"
        )
    if version < 0:
        raise SchemaError(f"has a negative schema version ({version}): not a job database")
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise SchemaError(
                "is an SQLite database of something else (it has tables but no schema"
                " version); refusing to use it"
            )
    return version


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply every migration newer than the database, each in its own transaction; return
    the version reached. ``conn`` must be in autocommit mode (``isolation_level=None``)."""
    _check_sequence(migrations)
    version = check_version(conn, migrations)
    for migration in migrations:
        if migration.version <= version:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in migration.statements:
                conn.execute(statement)
            # user_version is part of the database header, written in the same transaction.
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise SchemaError(
                f"cannot migrate the schema from version {version} to {migration.version}"
                f" ({exc}); it is left at version {version}"
            ) from exc
        except BaseException:
            _rollback(conn)
            raise
        version = migration.version
    return version


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3...; got {versions}")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
