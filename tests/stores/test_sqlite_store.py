"""The SQLite job store on real files: durability, refusals, read-only and full file systems."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest
from jobstore_helpers import ended, make_job, opened, running

from worker_core import JobSpec
from worker_core.plugin import (
    Config,
    ConfigError,
    JobQuery,
    JobState,
    StoreUnavailable,
    WorkerError,
)
from worker_core.testing import run_job, running_engine
from worker_plugins.sqlite import (
    DATABASE_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseRefused,
    Migration,
    SqliteConfig,
    SqliteJobStore,
    SqlitePlugin,
)

COMMAND_TIMEOUT = 30


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection, as an operator's sqlite3 shell would make."""
    return sqlite3.connect(path, isolation_level=None, timeout=COMMAND_TIMEOUT)


def integrity(path: Path) -> list[str]:
    conn = raw(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=COMMAND_TIMEOUT)


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` made for one test, unmounted and removed whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="worker-test-sqlite-"))
    try:
        try:
            _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint))
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        try:
            yield mountpoint
        finally:
            try:
                _run("umount", str(mountpoint))
            except subprocess.CalledProcessError:
                _run("umount", "-l", str(mountpoint))  # a test failed with a file still open
    finally:
        mountpoint.rmdir()


def _modes(path: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in path.parent.iterdir()
        if p.name.startswith(path.name)
    }


# -- durability -------------------------------------------------------------------------------


def test_reopening_keeps_records_labels_keys_order_and_sequence(db: Path) -> None:
    jobs = [make_job(name=f"n{i}", labels={"batch": str(i % 2)}, key=f"k{i}") for i in range(5)]
    with opened(db) as store:
        for job in jobs:
            store.add(job)
        store.update(ended(running(jobs[1]), output_bytes=99))
        store.update(running(jobs[3]))
        before = store.query(JobQuery())
    with opened(db) as store:
        assert store.query(JobQuery()) == before
        assert store.get(jobs[1].id) == ended(running(jobs[1]), output_bytes=99)
        assert [j.id for j in store.unfinished()] == [jobs[i].id for i in (0, 2, 3, 4)]
        assert [r.job.id for r in store.query(JobQuery(labels={"batch": "1"}))] == [
            jobs[3].id,
            jobs[1].id,
        ]
        assert [s.output_bytes for s in store.finished()] == [99]
        # The idempotency keys survive: a resubmit after a restart finds the first job.
        assert store.add(make_job(key="k2")) == jobs[2]
        newer = make_job()
        store.add(newer)
        assert store.query(JobQuery(limit=1))[0].seq > before[0].seq
    assert integrity(db) == ["ok"]


def test_the_schema_version_and_wal_mode_are_recorded(db: Path) -> None:
    with opened(db):
        pass
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs", "labels", "jobs_idempotency"} <= tables
    finally:
        conn.close()


@pytest.mark.parametrize(("setting", "value"), [("normal", 1), ("full", 2), ("extra", 3)])
def test_synchronous_is_configurable(db: Path, setting: str, value: int) -> None:
    with opened(db, SqliteConfig(synchronous=setting, busy_timeout=1.5)) as store:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == value
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1500
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_files_are_private_even_with_a_permissive_umask(db: Path) -> None:
    old = os.umask(0)
    try:
        with opened(db) as store:
            store.add(make_job())
            modes = _modes(db)
    finally:
        os.umask(old)
    assert set(modes) == {DATABASE_NAME, f"{DATABASE_NAME}-wal", f"{DATABASE_NAME}-shm"}
    assert set(modes.values()) == {0o600}, modes


def test_an_existing_readable_database_is_made_private(db: Path) -> None:
    with opened(db) as store:
        store.add(make_job())
    db.chmod(0o644)
    with opened(db) as store:
        assert len(store.query(JobQuery())) == 1
        assert set(_modes(db).values()) == {0o600}


def test_a_write_waits_for_another_connection_then_reports_it_unavailable(db: Path) -> None:
    with opened(db, SqliteConfig(busy_timeout=0.2)) as store:
        store.add(first := make_job())
        other = raw(db)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="lock"):
                store.add(make_job())
            with pytest.raises(StoreUnavailable, match="lock"):
                store.update(running(first))
            assert store.get(first.id) == first, "readers are not blocked by a writer (WAL)"
            other.execute("ROLLBACK")
        finally:
            other.close()
        store.update(running(first))
        assert store.get(first.id) == running(first)


def test_a_closed_store_says_so(db: Path) -> None:
    store = SqliteJobStore(db)
    store.close()
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.add(make_job())
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get("x")


def test_an_unreadable_record_names_the_job(db: Path) -> None:
    job = make_job()
    with opened(db) as store:
        store.add(job)
        conn = raw(db)
        try:
            conn.execute("UPDATE jobs SET record = '{\"id\": 3' WHERE id = ?", (job.id,))
        finally:
            conn.close()
        with pytest.raises(WorkerError, match=f"record of job {job.id} is unreadable"):
            store.get(job.id)


def test_concurrent_writers_and_readers_from_threads(db: Path) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(100):
                job = make_job(owner=f"w{worker}", labels={"i": str(i)})
                store.add(job)
                store.update(ended(running(job)))
                assert store.get(job.id) == ended(running(job))
                store.query(JobQuery(owner=f"w{worker}", limit=5))
        except BaseException as exc:
            errors.append(exc)

    with opened(db) as store:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            assert not t.is_alive()
        assert not errors, errors
        assert len(store.query(JobQuery(limit=1000))) == 600
        assert len(list(store.finished())) == 600
    assert integrity(db) == ["ok"]


WRITER = """
import sys, uuid
sys.path.insert(0, sys.argv[2])
from jobstore_helpers import ended, make_job, running
from worker_plugins.sqlite import SqliteJobStore
store = SqliteJobStore(sys.argv[1])
while True:
    job = make_job(labels={"n": uuid.uuid4().hex})
    store.add(job)
    print("added", job.id, flush=True)
    store.update(ended(running(job)))
    print("ended", job.id, flush=True)
"""


@pytest.mark.parametrize("cycle", range(5))
def test_a_killed_writer_loses_nothing_acknowledged(db: Path, cycle: int) -> None:
    acknowledged: dict[str, str] = {}
    for round_number in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            # Kill it at a different moment each round: after 20 to 80 acknowledgments.
            for _ in range(20 + (cycle * 13 + round_number * 29) % 60):
                line = child.stdout.readline()
                assert line, "the writer died on its own"
                what, job_id = line.split()
                acknowledged[job_id] = what
        finally:
            child.kill()
            child.wait(COMMAND_TIMEOUT)
            if child.stdout is not None:
                child.stdout.close()
        assert integrity(db) == ["ok"]
        with opened(db) as store:
            for job_id, what in acknowledged.items():
                job = store.get(job_id)
                assert job is not None, f"acknowledged job {job_id} is gone"
                assert what == "added" or job.state is JobState.ENDED


# -- refusals: nothing is ever replaced -------------------------------------------------------


def test_a_database_of_a_newer_schema_is_refused_and_left_untouched(db: Path) -> None:
    with opened(db) as store:
        store.add(make_job())
    conn = raw(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(DatabaseRefused) as refused:
        SqliteJobStore(db)
    message = str(refused.value)
    assert str(db) in message and "\n" not in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"reads up to {SCHEMA_VERSION}" in message
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        os.urandom(8192),
        b"hello, this is a text file\n",
        b"SQLite format 3\x00" + b"\xff" * 4080,  # the magic, then a header that is not one
    ],
    ids=["random", "text", "bad-header"],
)
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(
    db: Path, content: bytes
) -> None:
    db.write_bytes(content)
    with pytest.raises(DatabaseRefused) as refused:
        SqliteJobStore(db)
    message = str(refused.value)
    assert str(db) in message and "\n" not in message
    assert "not an SQLite database" in message or "corrupt" in message
    assert db.read_bytes() == content
    assert sorted(p.name for p in db.parent.iterdir()) == [DATABASE_NAME]


def _database_with_records(db: Path, count: int = 300) -> None:
    with opened(db) as store:
        for i in range(count):
            store.add(make_job(args=("-c", "x" * 1000), labels={"i": str(i)}))


@pytest.mark.parametrize("keep", [0.5, 0.1, 50 / 100_000])
def test_a_truncated_database_is_refused_and_left_untouched(db: Path, keep: float) -> None:
    _database_with_records(db)
    size = db.stat().st_size
    assert size > 100_000
    os.truncate(db, int(size * keep))
    before = db.read_bytes()
    with pytest.raises(DatabaseRefused, match="truncated") as refused:
        SqliteJobStore(db)
    message = str(refused.value)
    assert str(db) in message and "\n" not in message
    assert db.read_bytes() == before


def test_a_database_with_a_corrupt_page_is_refused(db: Path) -> None:
    _database_with_records(db)
    size = db.stat().st_size
    with open(db, "r+b") as file:  # a page in the middle of the jobs table's b-tree
        file.seek((size // 2) // 4096 * 4096)
        file.write(os.urandom(4096))
    before = db.read_bytes()
    with pytest.raises(DatabaseRefused, match="corrupt") as refused:
        SqliteJobStore(db)
    assert str(db) in str(refused.value)
    assert db.read_bytes() == before


def test_another_applications_database_is_refused(db: Path) -> None:
    conn = raw(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(DatabaseRefused, match="something else"):
        SqliteJobStore(db)
    assert db.read_bytes() == before


def test_a_directory_in_place_of_the_file_is_refused(db: Path) -> None:
    db.mkdir()
    with pytest.raises(DatabaseRefused, match="not a regular file"):
        SqliteJobStore(db)


def test_a_path_with_uri_characters_is_the_file_opened(tmp_path: Path) -> None:
    odd = tmp_path / "state dir?x=1#frag%20"
    odd.mkdir()
    with opened(odd / DATABASE_NAME) as store:
        store.add(job := make_job())
    assert sorted(p.name for p in odd.iterdir()) == [DATABASE_NAME]
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name]
    with opened(odd / DATABASE_NAME) as store:
        assert store.get(job.id) == job


def test_a_symlink_in_place_of_the_file_is_refused(db: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite3"
    with opened(elsewhere):
        pass
    db.symlink_to(elsewhere)
    with pytest.raises(DatabaseRefused, match="not a regular file"):
        SqliteJobStore(db)


def test_an_empty_file_becomes_a_new_database(db: Path) -> None:
    db.touch(0o600)  # what a crash right after creating the file leaves
    with opened(db) as store:
        store.add(job := make_job())
    with opened(db) as store:
        assert store.get(job.id) == job


# -- migrations -------------------------------------------------------------------------------


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_migration_upgrades_a_database_and_keeps_its_records(db: Path) -> None:
    with opened(db) as store:
        store.add(job := make_job())
    version_2 = Migration(
        2, ("ALTER TABLE jobs ADD COLUMN note TEXT", "CREATE INDEX jobs_note ON jobs (note)")
    )
    store = SqliteJobStore(db, migrations=(*MIGRATIONS, version_2))
    try:
        assert store.get(job.id) == job
    finally:
        store.close()
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert "note" in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    finally:
        conn.close()
    # And the code that knows only version 1 now refuses the file.
    with pytest.raises(DatabaseRefused, match="schema version 2"):
        SqliteJobStore(db)


def test_a_failing_migration_leaves_the_previous_version_whole(db: Path) -> None:
    with opened(db) as store:
        store.add(job := make_job())
    broken = Migration(2, ("ALTER TABLE jobs ADD COLUMN note TEXT", "THIS IS NOT SQL"))
    with pytest.raises(DatabaseRefused, match="cannot migrate the schema from version 1 to 2"):
        SqliteJobStore(db, migrations=(*MIGRATIONS, broken))
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "note" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    finally:
        conn.close()
    with opened(db) as store:
        assert store.get(job.id) == job


# -- read-only and full file systems ----------------------------------------------------------


def test_a_state_directory_on_a_read_only_file_system_is_refused() -> None:
    with tmpfs("4m") as mnt:
        _run("mount", "-o", "remount,ro", str(mnt))
        with pytest.raises(DatabaseRefused, match="read-only file system") as refused:
            SqliteJobStore(mnt / DATABASE_NAME)
        assert str(mnt) in str(refused.value) and "\n" not in str(refused.value)
        assert list(mnt.iterdir()) == []


def test_an_existing_database_on_a_file_system_remounted_read_only_is_refused() -> None:
    with tmpfs("4m") as mnt:
        db = mnt / DATABASE_NAME
        with opened(db) as store:
            store.add(job := make_job())
        before = db.read_bytes()
        _run("mount", "-o", "remount,ro", str(mnt))
        with pytest.raises(DatabaseRefused, match="read-only file system"):
            SqliteJobStore(db)
        assert db.read_bytes() == before
        _run("mount", "-o", "remount,rw", str(mnt))
        with opened(db) as store:
            assert store.get(job.id) == job


def _fill(path: Path) -> None:
    """Write ``path`` until the file system has no space left."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as file:
        while True:
            try:
                file.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        while True:  # the last few bytes, so nothing at all is left
            try:
                file.write(b"\0" * 512)
            except OSError:
                break


def test_a_full_disk_makes_writes_unavailable_without_corrupting_anything() -> None:
    with tmpfs("2m") as mnt:
        db = mnt / DATABASE_NAME
        store = SqliteJobStore(db)
        try:
            committed = {}
            for i in range(20):
                job = make_job(labels={"i": str(i)})
                store.add(job)
                committed[job.id] = job
            first = next(iter(committed.values()))
            store.update(running(first))
            committed[first.id] = running(first)

            _fill(mnt / "filler")
            big = ("-c", "x" * 60_000)
            with pytest.raises(StoreUnavailable, match="full") as refused:
                for _ in range(500):  # 30 MB: far more than the file system holds
                    job = make_job(args=big)
                    store.add(job)
                    committed[job.id] = job
            assert str(db) in str(refused.value)
            target = committed[first.id]
            with pytest.raises(StoreUnavailable, match="full"):
                for i in range(500):
                    newer = attrs.evolve(target, facts={"blob": "y" * 60_000, "n": i})
                    store.update(newer)
                    committed[first.id] = newer
            with pytest.raises(StoreUnavailable, match="full"):
                for _ in range(500):
                    job = make_job(args=big)
                    store.add(job)
                    committed[job.id] = job

            # Nothing acknowledged is lost, nothing is corrupt, reads still work.
            assert integrity(db) == ["ok"]
            for job_id, job in committed.items():
                assert store.get(job_id) == job
            assert {r.job.id for r in store.query(JobQuery(limit=1000))} == set(committed)
            assert len(store.query(JobQuery(labels={"i": "3"}))) == 1

            # Space comes back: the same store writes again.
            (mnt / "filler").unlink()
            later = make_job(args=big)
            store.add(later)
            store.update(ended(running(later)))
            store.update(ended(running(committed[first.id])))
            assert store.get(later.id) == ended(running(later))
        finally:
            store.close()
        assert integrity(db) == ["ok"]
        with opened(db) as store:
            assert store.get(later.id) == ended(running(later))
            assert len(store.query(JobQuery(limit=1000))) == len(committed) + 1


# -- the plugin -------------------------------------------------------------------------------


def test_the_plugin_opens_the_database_in_the_state_directory(tmp_path: Path) -> None:
    plugin = SqlitePlugin()
    config = Config.from_mapping({"plugins": {"sqlite": {"synchronous": "full"}}})
    engine = SimpleNamespace(state_dir=tmp_path)
    plugin.configure(engine=engine, config=config)  # type: ignore[arg-type]
    assert plugin.config == SqliteConfig(synchronous="full")
    store = plugin.job_store(engine=engine)  # type: ignore[arg-type]
    try:
        store.add(make_job())
    finally:
        store.close()
    assert (tmp_path / "jobs.sqlite3").is_file()


def test_the_plugin_needs_a_state_directory() -> None:
    with pytest.raises(ConfigError, match=r"needs a state directory \(--state-dir or \[engine\]"):
        SqlitePlugin().job_store(engine=SimpleNamespace(state_dir=None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"synchronous": "off"}, "synchronous must be one of normal, full, extra"),
        ({"synchronous": 2}, "expected str"),
        ({"busy_timeout": -1}, "busy_timeout must be between 0 and 3600"),
        ({"journal": "wal"}, "journal"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(section: dict[str, object], problem: str) -> None:
    config = Config.from_mapping({"plugins": {"sqlite": section}})
    with pytest.raises(ConfigError, match=problem) as refused:
        SqlitePlugin().configure(engine=SimpleNamespace(state_dir=None), config=config)  # type: ignore[arg-type]
    assert "plugins.sqlite" in str(refused.value)


# -- through the engine -----------------------------------------------------------------------


def test_an_engine_with_the_plugin_keeps_records_across_a_restart(tmp_path: Path) -> None:
    config = {"engine": {"state_dir": str(tmp_path / "state")}}
    with running_engine("sqlite", config=config) as engine:
        job = run_job(engine, JobSpec("sh", ("-c", "exit 3"), name="kept", labels={"k": "v"}))
    assert job.exit_code == 3
    assert integrity(tmp_path / "state" / DATABASE_NAME) == ["ok"]
    with running_engine("sqlite", config=config) as engine:
        again = engine.get(job.id)
    assert again.exit_code == 3 and again.spec.name == "kept" and again.spec.labels == {"k": "v"}


def test_an_engine_refuses_to_start_on_a_database_it_does_not_recognise(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / DATABASE_NAME).write_bytes(b"not a database at all" * 100)
    with (
        pytest.raises(DatabaseRefused, match="not an SQLite database"),
        running_engine("sqlite", config={"engine": {"state_dir": str(state)}}),
    ):
        pass
    assert (state / DATABASE_NAME).read_bytes() == b"not a database at all" * 100


def test_an_engine_with_the_plugin_and_no_state_directory_does_not_start() -> None:
    with pytest.raises(ConfigError, match="needs a state directory"), running_engine("sqlite"):
        pass
