"""Opening the database file, or refusing it with one line that names it.

Nothing here ever replaces or rewrites a file it does not recognise: a file that is not an
SQLite database, a truncated or corrupt one, one of another application or one written by
a newer schema is refused before anything is written to it. Only a missing or empty file
becomes a new database (an empty file holds no records: a crash right after creating it
leaves one).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path

from worker_core.plugin import WorkerError

from .config import SqliteConfig
from .schema import MIGRATIONS, Migration, SchemaError, check_version, migrate

#: The first bytes of every SQLite 3 database file.
HEADER = b"SQLite format 3\x00"
#: SQLite's header is 100 bytes: a shorter non-empty file is a truncated database.
HEADER_SIZE = 100

#: The WAL is truncated back to this size after a checkpoint, so a burst of writes does not
#: leave a large file behind for good.
JOURNAL_SIZE_LIMIT = 16 << 20


class DatabaseRefused(WorkerError):
    """The job database cannot be used; the message names the file and the reason."""


def open_database(
    path: Path, config: SqliteConfig, migrations: Sequence[Migration] = MIGRATIONS
) -> sqlite3.Connection:
    """A connection to the job database at ``path``, migrated to the current schema.

    Creates the file (0600) if it is missing. Raises :class:`DatabaseRefused` for every file
    it will not use and for a directory where it cannot write.
    """
    _check_directory(path)
    _check_file(path)
    try:
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=rw",  # never create a file sqlite3 names
            uri=True,
            timeout=config.busy_timeout,
            isolation_level=None,  # autocommit: transactions are explicit BEGIN ... COMMIT
            check_same_thread=False,  # one connection for every engine thread, behind a lock
        )
    except sqlite3.Error as exc:
        raise DatabaseRefused(f"{path}: cannot open the job database: {exc}") from exc
    try:
        _prepare(conn, path, config, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_directory(path: Path) -> None:
    directory = path.parent
    try:
        flags = os.statvfs(directory).f_flag
    except OSError as exc:
        raise DatabaseRefused(f"{directory}: cannot use the state directory: {exc}") from exc
    if flags & os.ST_RDONLY:
        raise DatabaseRefused(
            f"{directory}: the state directory is on a read-only file system;"
            " the job database must be writable"
        )


def _check_file(path: Path) -> None:
    """Create a missing file 0600; refuse what is not an SQLite database, reading only."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseRefused(f"{path}: cannot create the job database: {exc.strerror}") from exc
    else:
        os.close(fd)
        return
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            raise DatabaseRefused(
                f"{path}: not a regular file; refusing to use it as the job database"
            )
        with open(path, "rb") as file:
            head = file.read(HEADER_SIZE)
    except OSError as exc:
        raise DatabaseRefused(f"{path}: cannot read the job database: {exc.strerror}") from exc
    if head and not (head.startswith(HEADER) or HEADER.startswith(head)):
        raise DatabaseRefused(f"{path}: not an SQLite database; {REFUSING}")
    if 0 < len(head) < HEADER_SIZE:
        raise DatabaseRefused(
            f"{path}: the job database is truncated ({len(head)} bytes, shorter than an SQLite"
            f" header); {REFUSING}"
        )
    # Only the server may read the records (they hold jobs' environments); SQLite gives its
    # -wal and -shm files the database's mode.
    for file_path in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if os.lstat(file_path).st_mode & 0o077:
                os.chmod(file_path, 0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatabaseRefused(f"{file_path}: cannot make it private: {exc.strerror}") from exc


def _prepare(
    conn: sqlite3.Connection, path: Path, config: SqliteConfig, migrations: Sequence[Migration]
) -> None:
    try:
        # Read-only checks first: nothing is written to a database that is then refused.
        check_version(conn, migrations)
        if config.check_at_open:
            problems = [" ".join(row[0].split()) for row in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise DatabaseRefused(_corrupt(path, "; ".join(problems)))
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise DatabaseRefused(f"{path}: cannot use WAL mode here (journal mode {mode!r})")
        conn.execute(f"PRAGMA synchronous = {config.synchronous.upper()}")
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, migrations)
    except SchemaError as exc:
        raise DatabaseRefused(f"{path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB:
            raise DatabaseRefused(f"{path}: not an SQLite database; {REFUSING}") from exc
        if code == sqlite3.SQLITE_CORRUPT:
            raise DatabaseRefused(_corrupt(path, str(exc))) from exc
        raise DatabaseRefused(f"{path}: cannot use the job database: {exc}") from exc


#: The end of every refusal of a file: what the server will not do, and what the operator can.
REFUSING = "refusing to use or replace it (restore it from a backup, or move it away)"


def _corrupt(path: Path, detail: str) -> str:
    """The refusal of a corrupt database, saying "truncated" when its size shows it."""
    expected = _size_in_header(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if expected is not None and size is not None and size < expected:
        return (
            f"{path}: the job database is truncated ({size} bytes of the {expected} its header"
            f" records: {detail}); {REFUSING}"
        )
    return f"{path}: the job database is corrupt ({detail}); {REFUSING}"


def _size_in_header(path: Path) -> int | None:
    """The database size its header records, when the header says that field is valid."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_SIZE)
    except OSError:
        return None
    if len(head) < HEADER_SIZE or not head.startswith(HEADER):
        return None
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # The page count is valid only if written by a version that keeps it (the two counters match).
    if head[24:28] != head[92:96] or not pages:
        return None
    return page_size * pages
