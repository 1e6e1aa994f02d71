"""The SQLite job store: every record committed to ``jobs.sqlite3`` before it is acknowledged.

One connection, guarded by a lock: the engine calls from several threads, and SQLite
serializes writers anyway. No write returns before it is committed. Writes that arrive
while another commits are committed together, in one transaction (group commit: one append
to the WAL, each page they share written once; see ``_write``). A write alone is a ``BEGIN
IMMEDIATE ... COMMIT`` transaction or, when it is one statement (most are), that statement
in autocommit mode, where SQLite makes it a transaction of its own, atomic and committed
when it returns: one call into SQLite instead of three, each of which releases and takes
back the GIL. A write that cannot be committed (the disk is full, an I/O error, the file
became read-only, another process holds the lock) is rolled back and raised as
:class:`~worker_core.plugin.StoreUnavailable`; the database stays as it was, and the store
works again once the cause is gone.

Records are stored as the JSON of :func:`~worker_core.plugin.job_to_dict`, beside the
columns that list and retention filter on, so every filter is SQL on an index.

The final records of the jobs that ended last stay in memory once committed (a bounded
number and size, :data:`RECENT_ENDED`): a job is most often read right after it ended (a
client's Watch or Get, a submit's wait), and that read then costs neither a query nor
decoding the JSON. Only this process writes the file (the state directory is locked), so
what was committed last is what the file holds.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from worker_core.plugin import (
    OUTPUT_BYTES_FACT,
    FinishedSummary,
    Job,
    JobQuery,
    JobState,
    StoredJob,
    StoreUnavailable,
    WorkerError,
    job_from_dict,
    job_to_dict,
)

from .config import SqliteConfig
from .database import open_database
from .schema import MIGRATIONS, Migration

T = TypeVar("T")

#: Rows read per statement when streaming finished jobs, and ids per ``IN (...)`` list: the
#: lock is never held for long, and no statement nears SQLite's limit on parameters.
BATCH = 500

#: Final records kept in memory after their commit (see the module's docstring): at most
#: this many, of at most RECENT_ENDED_BYTES of JSON in all, none larger than
#: RECENT_ENDED_LARGEST (a record with megabytes of arguments is read from the file).
RECENT_ENDED = 1024
RECENT_ENDED_BYTES = 8 << 20
RECENT_ENDED_LARGEST = 64 << 10

_ENDED = JobState.ENDED.value
#: Every state but ENDED, as SQL literals: recovery reads them through the state index.
_NOT_ENDED = ", ".join(f"'{s.value}'" for s in JobState if s is not JobState.ENDED)

#: Primary result codes meaning "cannot commit now" rather than "a bug in a statement".
_UNAVAILABLE = {
    sqlite3.SQLITE_FULL: "the file system is full",
    sqlite3.SQLITE_IOERR: "an I/O error",
    sqlite3.SQLITE_READONLY: "the database became read-only",
    sqlite3.SQLITE_BUSY: "another process holds the database's lock",
    sqlite3.SQLITE_LOCKED: "the database is locked",
    sqlite3.SQLITE_CANTOPEN: "cannot open the database's journal",
    sqlite3.SQLITE_CORRUPT: "the database is corrupt",
    sqlite3.SQLITE_NOMEM: "out of memory",
}


class SqliteJobStore:
    """:class:`~worker_core.plugin.JobStore` in an SQLite database (WAL mode).

    Opening checks the file and refuses, with one line naming it, anything it will not use
    (see :mod:`worker_plugins.sqlite.database`); a missing file becomes a new database.
    """

    def __init__(
        self,
        path: str | Path,
        config: SqliteConfig | None = None,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.config = config or SqliteConfig()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = open_database(self.path, self.config, migrations)
        # The columns and labels last committed for each unfinished job, so an update writes
        # what changed without first reading the row back (most of a commit's cost). Only
        # this process writes the file (the state directory is locked), so it stays true.
        # Changed only with the lock held, right after the commit it describes.
        self._written: dict[str, tuple[tuple[Any, ...], list[tuple[str, str]]]] = {}
        # The newest final records, oldest first, with the size of their JSON. Changed with
        # the lock held, like _written; get reads it without (see there).
        self._recent: OrderedDict[str, tuple[Job, int]] = OrderedDict()
        self._recent_bytes = 0
        # Writes waiting for their commit (see _write); appended to without the lock.
        self._queue: deque[_Write] = deque()

    # -- writes ------------------------------------------------------------------------------

    def add(self, job: Job) -> Job:
        """Commit a new record, or return the record its owner's idempotency key already has.

        The lookup and the insert are one transaction, and the UNIQUE index on (owner, key)
        backs it: two adds with one key leave exactly one record.
        """
        row = _Row.of(job)

        def write(conn: sqlite3.Connection) -> Job:
            if job.idempotency_key is not None:
                existing = self._by_key(conn, job)
                if existing is not None:
                    return existing
            conn.execute(
                f"INSERT INTO jobs (id, {', '.join(_Row.COLUMNS)}, record)"
                f" VALUES (?, {_marks(len(_Row.COLUMNS))}, ?)",
                (job.id, *row.columns, row.record),
            )
            row.write_labels(conn, job.id)
            return job

        def committed(added: Job) -> None:
            if added is job and job.state is not JobState.ENDED:
                self._written[job.id] = (row.columns, row.labels)

        # Without a key to look up or labels to insert, the INSERT is the whole transaction.
        single = job.idempotency_key is None and not row.labels
        try:
            return self._write("add", write, single=single, committed=committed)
        except sqlite3.IntegrityError as exc:
            if job.idempotency_key is not None:
                # Another process on the file won the race for the key (this one cannot: the
                # lookup and the insert share a transaction): its record is the answer.
                existing = self._read_one_key(job)
                if existing is not None:
                    return existing
            raise ValueError(f"job {job.id} is already in the store") from exc

    def update(self, job: Job) -> None:
        """Commit a newer snapshot; ignored if the record was removed meanwhile.

        Only the columns (and labels) that changed are written: an index whose column is
        SET is rewritten even if the value is the same, and that doubles the commit's pages.
        """
        row = _Row.of(job)

        known = self._written.get(job.id)

        # Labels come from the spec and almost never change: then the UPDATE is all there is
        # to commit, and it is a transaction by itself.
        single = known is not None and dict(known[1]) == dict(row.labels)

        def write(conn: sqlite3.Connection) -> bool:
            if known is not None:
                current, labels = known
            else:
                current = conn.execute(
                    f"SELECT {', '.join(_Row.COLUMNS)} FROM jobs WHERE id = ?", (job.id,)
                ).fetchone()
                if current is None:
                    return False
                labels = conn.execute(
                    "SELECT key, value FROM labels WHERE job_id = ?", (job.id,)
                ).fetchall()
            changed = [
                (column, new)
                for column, old, new in zip(_Row.COLUMNS, current, row.columns, strict=True)
                if old != new
            ]
            changed.append(("record", row.record))
            assignments = ", ".join(f"{column} = ?" for column, _ in changed)
            cursor = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ?",
                (*(value for _, value in changed), job.id),
            )
            if cursor.rowcount == 0:
                return False  # removed meanwhile (a purge between two changes)
            if dict(labels) != dict(row.labels):
                conn.execute("DELETE FROM labels WHERE job_id = ?", (job.id,))
                row.write_labels(conn, job.id)
            return True

        def committed(present: bool) -> None:
            if job.state is JobState.ENDED:
                self._written.pop(job.id, None)
                if present:
                    self._remember(job, len(row.record))
            else:
                self._forget(job.id)
                if present and (job.id in self._written or known is None):
                    self._written[job.id] = (row.columns, row.labels)

        try:
            self._write("update", write, single=single, committed=committed)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"job {job.id}: idempotency key {job.idempotency_key!r} belongs to another record"
            ) from exc

    def remove(self, job_ids: Collection[str]) -> None:
        """Delete these records and their labels in one transaction; unknown ids are ignored."""
        ids = list(dict.fromkeys(job_ids))

        def write(conn: sqlite3.Connection) -> None:
            for start in range(0, len(ids), BATCH):
                batch = ids[start : start + BATCH]
                # labels go by ON DELETE CASCADE
                conn.execute(f"DELETE FROM jobs WHERE id IN ({_marks(len(batch))})", batch)

        def committed(_: None) -> None:
            for job_id in ids:
                self._written.pop(job_id, None)
                self._forget(job_id)

        if ids:
            self._write("remove", write, committed=committed)

    # -- reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        # Without the lock: one dict read is atomic, and a reader must not wait for whoever
        # commits now (the event loop of a transport reads records). An entry is added after
        # its record is committed and dropped right after the record is removed.
        recent = self._recent.get(job_id)
        if recent is not None and self._conn is not None:
            return recent[0]
        rows = self._read("SELECT record FROM jobs WHERE id = ?", (job_id,))
        return self._decode(job_id, rows[0][0]) if rows else None

    def query(self, query: JobQuery) -> list[StoredJob]:
        """At most ``query.limit`` matching records, highest seq first. Time filters are
        strict (``created_after=t`` keeps records created after ``t``); labels must all match.
        """
        _check_limit(query.limit)
        if query.limit == 0:
            return []
        where, params = _where(query)
        sql = f"SELECT seq, id, record FROM jobs{where} ORDER BY seq DESC LIMIT ?"
        rows = self._read(sql, (*params, query.limit))
        return [StoredJob(seq, self._decode(job_id, record)) for seq, job_id, record in rows]

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids starting with ``prefix`` (case-sensitive), in sorted order."""
        _check_limit(limit)
        if limit == 0 or "\x00" in prefix or not _encodable(prefix):
            return []  # no stored id holds a NUL or a lone surrogate
        pattern = _glob_literal(prefix) + "*"
        rows = self._read(
            "SELECT id FROM jobs WHERE id GLOB ? ORDER BY id LIMIT ?", (pattern, limit)
        )
        return [job_id for (job_id,) in rows]

    def unfinished(self) -> list[Job]:
        rows = self._read(f"SELECT id, record FROM jobs WHERE state IN ({_NOT_ENDED}) ORDER BY seq")
        return [self._decode(job_id, record) for job_id, record in rows]

    def finished(self) -> Iterator[FinishedSummary]:
        """Every ENDED record, most recently ended first (equal times: later submitted first).

        Streams in batches, each read under the lock and continued from where the last one
        stopped (by end time and seq), so neither the lock nor a statement stays open while
        the caller works, and memory does not grow with the number of records.
        """
        # Named, because without statistics the planner prefers jobs_state and a sort of
        # every finished row per batch; this index is already in the order wanted.
        select = (
            "SELECT id, ended_at, output_bytes, seq FROM jobs INDEXED BY jobs_finished"
            f" WHERE state = '{_ENDED}'"
        )
        order = " ORDER BY ended_at DESC, seq DESC LIMIT ?"
        rows = self._read(select + order, (BATCH,))
        while rows:
            for job_id, ended, size, _ in rows:
                yield FinishedSummary(job_id, float(ended), int(size))
            if len(rows) < BATCH:
                return
            last_ended, last_seq = rows[-1][1], rows[-1][3]
            rows = self._read(
                select + " AND (ended_at, seq) < (?, ?)" + order, (last_ended, last_seq, BATCH)
            )

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the database). Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._recent.clear()
            self._recent_bytes = 0
        if conn is not None:
            # Keeps the planner's statistics current; never a reason to fail a shutdown.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA optimize")
            conn.close()

    # -- the machinery -----------------------------------------------------------------------

    def _write(
        self,
        what: str,
        body: Callable[[sqlite3.Connection], T],
        *,
        single: bool = False,
        committed: Callable[[T], None] | None = None,
    ) -> T:
        """Commit what ``body`` executes; return its result once it is committed, after
        ``committed(result)`` ran under the same hold of the lock (what that records is then
        never older than the file).

        ``single``: ``body`` makes exactly one change (one statement), which autocommit mode
        commits by itself when it is alone; BEGIN and COMMIT are left out then.

        Group commit: a write queues itself, then takes the lock, and whoever holds the lock
        commits every write queued by then in one transaction (one append to the WAL for
        all, where each page they share is written once). A write that waited for the lock
        while another committed usually finds itself committed with it. No write returns
        before the commit that holds it; each gets its own answer (see _commit_queued).
        """
        write = _Write(what, body, single, committed)
        self._queue.append(write)
        with self._lock:
            if not write.done:
                self._commit_queued()
        if write.error is not None:
            raise write.error
        return cast(T, write.result)

    def _commit_queued(self) -> None:
        """Commit every queued write, the lock held: all in one transaction, or, if that
        fails, each in one of its own, so that one write's failure (a duplicate id, a key
        another process took) fails only that write."""
        batch: list[_Write] = []
        while self._queue:
            batch.append(self._queue.popleft())
        try:
            if len(batch) > 1 and self._commit_together(batch):
                return
            for write in batch:
                if not write.done:
                    self._commit_alone(write)
        finally:
            for write in batch:
                if not write.done:  # something was raised through here (an interrupt)
                    write.error = StoreUnavailable(f"job store {self.path}: write interrupted")
                    write.done = True

    def _commit_together(self, batch: list[_Write]) -> bool:
        """One transaction for every write of ``batch``; False (nothing changed) if any
        statement or the commit failed."""
        try:
            conn = self._connection()
        except StoreUnavailable:
            return False  # each is told so by _commit_alone
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [write.body(conn) for write in batch]
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            return False
        except BaseException:
            _rollback(conn)
            raise
        for write, result in zip(batch, results, strict=True):
            self._finish(write, result)
        return True

    def _commit_alone(self, write: _Write) -> None:
        """Commit one write in a transaction of its own; its result or its error."""
        try:
            conn = self._connection()
        except StoreUnavailable as exc:  # closed
            write.error = exc
            write.done = True
            return
        try:
            if write.single:
                result = write.body(conn)
            else:
                conn.execute("BEGIN IMMEDIATE")
                result = write.body(conn)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            unavailable = self._unavailable(write.what, exc)
            if unavailable is not None:
                unavailable.__cause__ = exc
            write.error = unavailable or exc
            write.done = True
            return
        except Exception as exc:  # a bug in a statement's code: that write fails, not others
            _rollback(conn)
            write.error = exc
            write.done = True
            return
        except BaseException:
            _rollback(conn)
            raise
        self._finish(write, result)

    def _finish(self, write: _Write, result: Any) -> None:
        if write.committed is not None:
            write.committed(result)
        write.result = result
        write.done = True

    def _remember(self, job: Job, size: int) -> None:
        """Keep ``job``, just committed as final, for :meth:`get`. Call with the lock held."""
        self._forget(job.id)
        if size > RECENT_ENDED_LARGEST or not _plain_facts(job):
            return
        self._recent[job.id] = (job, size)
        self._recent_bytes += size
        while len(self._recent) > RECENT_ENDED or self._recent_bytes > RECENT_ENDED_BYTES:
            _, (_, dropped) = self._recent.popitem(last=False)
            self._recent_bytes -= dropped

    def _forget(self, job_id: str) -> None:
        """Drop ``job_id``'s record from memory, if kept. Call with the lock held."""
        entry = self._recent.pop(job_id, None)
        if entry is not None:
            self._recent_bytes -= entry[1]

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                unavailable = self._unavailable("read", exc)
                if unavailable is not None:
                    raise unavailable from exc
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"job store {self.path}: closed")
        return self._conn

    def _unavailable(self, what: str, exc: sqlite3.Error) -> StoreUnavailable | None:
        """The StoreUnavailable for ``exc``, or None if it is a bug rather than a condition
        that passes (a malformed statement, a constraint)."""
        if isinstance(exc, sqlite3.IntegrityError):
            return None
        code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
        reason = _UNAVAILABLE.get(code)
        if reason is None:
            return None
        verb = "read" if what == "read" else f"commit ({what})"
        return StoreUnavailable(f"job store {self.path}: cannot {verb}: {reason} ({exc})")

    def _read_one_key(self, job: Job) -> Job | None:
        with self._lock:
            return self._by_key(self._connection(), job)

    def _by_key(self, conn: sqlite3.Connection, job: Job) -> Job | None:
        # The same expression as the UNIQUE index, so the lookup is that index.
        found = conn.execute(
            "SELECT id, record FROM jobs WHERE ifnull(owner, x'') = ifnull(?, x'')"
            " AND idempotency_key = ?",
            (job.owner_name, job.idempotency_key),
        ).fetchone()
        return self._decode(found[0], found[1]) if found else None

    def _decode(self, job_id: str, record: str) -> Job:
        try:
            return job_from_dict(json.loads(record))
        except ValueError as exc:  # json's errors are ValueErrors too
            raise WorkerError(
                f"job store {self.path}: the record of job {job_id} is unreadable: {exc}"
            ) from exc


class _Write:
    """One write waiting for its commit; once ``done``, its ``result`` or its ``error``."""

    __slots__ = ("body", "committed", "done", "error", "result", "single", "what")

    def __init__(
        self,
        what: str,
        body: Callable[[sqlite3.Connection], Any],
        single: bool,
        committed: Callable[[Any], None] | None,
    ) -> None:
        self.what = what
        self.body = body
        self.single = single
        self.committed = committed
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class _Row:
    """A job's indexed columns (in the order of :attr:`COLUMNS`), its JSON and its labels."""

    #: The columns beside the id and the record; all of them come from the record.
    COLUMNS = (
        "owner",
        "state",
        "name",
        "created_at",
        "ended_at",
        "output_bytes",
        "idempotency_key",
    )

    def __init__(
        self, columns: tuple[Any, ...], record: str, labels: list[tuple[str, str]]
    ) -> None:
        self.columns = columns
        self.record = record
        self.labels = labels

    @classmethod
    def of(cls, job: Job) -> _Row:
        size = job.facts.get(OUTPUT_BYTES_FACT, 0)
        if not isinstance(size, int) or isinstance(size, bool):
            size = 0
        # Finished records always have one (retention orders by it), others never.
        ended_at = None
        if job.state is JobState.ENDED:
            ended_at = job.ended_at if job.ended_at is not None else job.created_at
        columns = (
            job.owner_name,
            job.state.value,
            job.spec.name,
            job.created_at,
            ended_at,
            size,
            job.idempotency_key,
        )
        # default=str: a plugin's fact that JSON cannot hold is kept as its text rather than
        # making the whole record impossible to commit.
        record = json.dumps(job_to_dict(job), separators=(",", ":"), default=str)
        return cls(columns, record, list(job.spec.labels.items()))

    def write_labels(self, conn: sqlite3.Connection, job_id: str) -> None:
        if self.labels:
            conn.executemany(
                "INSERT INTO labels (job_id, key, value) VALUES (?, ?, ?)",
                [(job_id, key, value) for key, value in self.labels],
            )


def _where(query: JobQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of ``query`` and its parameters: every value is bound, none quoted."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.states:
        states = sorted(s.value for s in query.states)
        clauses.append(f"state IN ({_marks(len(states))})")
        params.extend(states)
    if query.owner:
        clauses.append("owner = ?")
        params.append(query.owner)
    if query.name:
        clauses.append("name = ?")
        params.append(query.name)
    for key, value in query.labels.items():
        # A subquery on the (key, value) index: a rare label costs its few rows, not a
        # walk through every record looking for it.
        clauses.append("id IN (SELECT job_id FROM labels WHERE key = ? AND value = ?)")
        params.extend((key, value))
    if query.ended_after is not None or query.ended_before is not None:
        # Implied by ended_at (only finished records have one), and what lets the planner
        # use the partial index jobs_finished.
        clauses.append(f"state = '{_ENDED}'")
    for column, op, bound in (
        ("created_at", ">", query.created_after),
        ("created_at", "<", query.created_before),
        ("ended_at", ">", query.ended_after),
        ("ended_at", "<", query.ended_before),
        ("seq", "<", query.before_seq),
    ):
        if bound is not None:
            clauses.append(f"{column} {op} ?")
            params.append(bound)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _glob_literal(text: str) -> str:
    """``text`` as a GLOB pattern that matches only itself: each wildcard in brackets."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _plain_facts(job: Job) -> bool:
    """Whether every fact is a JSON scalar, so the record read back from the file would equal
    ``job`` (a fact JSON cannot hold is written as its text: such a record is always read
    from the file, so every read returns the same)."""
    return all(
        value is None or isinstance(value, bool | int | float | str) for value in job.facts.values()
    )


def _check_limit(limit: int) -> None:
    # SQLite reads LIMIT -1 as "no limit": refuse it rather than return everything.
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (it does on SQLITE_FULL in some cases).
    if conn.in_transaction:
        # If even that fails, the connection's next BEGIN reports the real reason.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
