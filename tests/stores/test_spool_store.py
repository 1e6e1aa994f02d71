"""The spool output store: output in files under the state directory, followers reading them.

Most tests drive :class:`SpoolOutputStore` directly with chunks, as the engine does (open,
append in order per stream, close); the last ones go through a real engine running a real
job. Files are real files under pytest's tmp_path; the disk-full test mounts a small tmpfs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import drain, joined
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_core import Engine, JobSpec
from worker_core.plugin import (
    Chunk,
    Config,
    ConfigError,
    EngineSettings,
    InvalidSpec,
    StartAt,
    Stream,
)
from worker_plugins.spool import index
from worker_plugins.spool.config import SpoolConfig
from worker_plugins.spool.store import SpoolOutputStore

OUT, ERR = Stream.STDOUT, Stream.STDERR
BOTH = frozenset(Stream)
JOB = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
MIB = 1 << 20
GIB = 1 << 30


class Writer:
    """Appends chunks with correct per-stream offsets, as the engine does; keeps what it sent."""

    def __init__(self, store: SpoolOutputStore, job_id: str = JOB) -> None:
        self.store = store
        self.job_id = job_id
        self.offsets = {OUT: 0, ERR: 0}
        self.sent: list[Chunk] = []
        self.lost = 0
        store.open(job_id)

    def write(self, stream: Stream, data: bytes) -> int:
        chunk = Chunk(self.job_id, stream, self.offsets[stream], data)
        self.offsets[stream] += len(data)
        self.sent.append(chunk)
        lost = self.store.append(chunk)
        self.lost += lost
        return lost


def runs(chunks: list[Chunk]) -> list[tuple[Stream, int, bytes]]:
    """Chunks merged into runs of one stream at consecutive offsets: the order across
    streams and every byte with its offset, whatever sizes the pieces were read in."""
    merged: list[tuple[Stream, int, bytearray]] = []
    for c in chunks:
        if merged and merged[-1][0] is c.stream and merged[-1][1] + len(merged[-1][2]) == c.offset:
            merged[-1][2].extend(c.data)
        else:
            merged.append((c.stream, c.offset, bytearray(c.data)))
    return [(s, o, bytes(d)) for s, o, d in merged]


def interleaved(writer: Writer, seed: int, count: int = 300) -> None:
    rng = random.Random(seed)
    for i in range(count):
        stream = OUT if rng.random() < 0.6 else ERR
        writer.write(stream, rng.randbytes(rng.randint(1, 3000)) + f"<{i}>".encode())


@pytest.fixture
def store(tmp_path: Path) -> SpoolOutputStore:
    return SpoolOutputStore(tmp_path / "output")


# --- replay, live, resume ------------------------------------------------------------------


def test_a_replay_returns_every_byte_at_its_offset_in_the_order_of_arrival(
    store: SpoolOutputStore,
) -> None:
    writer = Writer(store)
    interleaved(writer, seed=1)
    store.close(JOB)
    replayed = drain(store.follow(JOB, BOTH, StartAt.BEGINNING))
    assert runs(replayed) == runs(writer.sent)
    assert dict(store.size(JOB)) == writer.offsets
    for stream in Stream:
        path = store.directory / JOB / stream.value
        assert path.read_bytes() == joined(writer.sent, stream), "a byte offset is a file offset"


def test_a_follower_of_one_stream_gets_only_that_stream(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    interleaved(writer, seed=2, count=50)
    store.close(JOB)
    chunks = drain(store.follow(JOB, frozenset({ERR}), StartAt.BEGINNING))
    assert {c.stream for c in chunks} == {ERR}
    assert joined(chunks, ERR) == joined(writer.sent, ERR)


def test_a_live_follower_is_woken_by_an_append_and_ends_at_close(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
    assert follower.read(timeout=0) == [], "nothing written yet: empty, not the end"
    got: list[Chunk] = []
    done = threading.Event()

    def follow() -> None:
        got.extend(drain(follower, timeout=10))
        done.set()

    reader = threading.Thread(target=follow)
    reader.start()
    writer.write(OUT, b"first ")
    writer.write(ERR, b"oops")
    writer.write(OUT, b"second")
    assert not done.wait(0.2), "the follower must not end while the job may still write"
    store.close(JOB)
    reader.join(10)
    assert done.is_set()
    assert runs(got) == [(OUT, 0, b"first "), (ERR, 0, b"oops"), (OUT, 6, b"second")]


def test_a_blocked_read_returns_as_soon_as_data_arrives(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
    timer = threading.Timer(0.1, writer.write, (OUT, b"x"))
    timer.start()
    try:
        batch = follower.read(timeout=10)
    finally:
        timer.join()
    assert batch is not None and [(c.offset, c.data) for c in batch] == [(0, b"x")]
    follower.close()
    assert follower.read(timeout=0) is None, "a closed follower is at its end"


def test_a_live_follower_and_a_later_replay_see_the_same_cross_stream_order(
    store: SpoolOutputStore,
) -> None:
    writer = Writer(store)
    live = store.follow(JOB, BOTH, StartAt.BEGINNING)
    seen: list[Chunk] = []
    rng = random.Random(3)
    for i in range(200):
        writer.write(OUT if i % 3 else ERR, rng.randbytes(rng.randint(1, 500)))
        if i % 7 == 0:
            seen.extend(live.read(timeout=0) or [])
    store.close(JOB)
    seen.extend(drain(live))
    replay = drain(store.follow(JOB, BOTH, StartAt.BEGINNING))
    assert runs(seen) == runs(writer.sent)
    assert runs(replay) == runs(seen)


def test_resume_from_offsets_continues_each_stream_exactly_there(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    interleaved(writer, seed=4, count=80)
    store.close(JOB)
    out, err = joined(writer.sent, OUT), joined(writer.sent, ERR)
    start = {OUT: len(out) // 3 + 1, ERR: len(err) // 2 - 1}
    chunks = drain(store.follow(JOB, BOTH, start))
    assert min(c.offset for c in chunks if c.stream is OUT) == start[OUT]
    assert joined(chunks, OUT) == out[start[OUT] :]
    assert joined(chunks, ERR) == err[start[ERR] :]
    # Past the end: nothing, and the follower ends.
    assert drain(store.follow(JOB, BOTH, {OUT: len(out) + 10, ERR: len(err)})) == []


def test_a_follower_from_the_end_sees_only_what_comes_after(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    writer.write(OUT, b"old")
    writer.write(ERR, b"old-err")
    follower = store.follow(JOB, BOTH, StartAt.END)
    writer.write(OUT, b"new")  # extends the record the follower started on
    writer.write(ERR, b"!")
    store.close(JOB)
    assert runs(drain(follower)) == [(OUT, 3, b"new"), (ERR, 7, b"!")]
    assert drain(store.follow(JOB, BOTH, StartAt.END)) == [], "END of a complete log: the end"


def test_reads_come_in_batches_no_larger_than_read_chunk_bytes(tmp_path: Path) -> None:
    store = SpoolOutputStore(tmp_path / "output", SpoolConfig(read_chunk_bytes=64 << 10))
    writer = Writer(store)
    payload = os.urandom(1 * MIB)
    writer.write(OUT, payload)
    store.close(JOB)
    follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
    batches = []
    while (batch := follower.read(timeout=5)) is not None:
        batches.append(batch)
    assert all(sum(len(c.data) for c in b) <= 64 << 10 for b in batches)
    assert b"".join(c.data for b in batches for c in b) == payload


def test_async_followers_replay_and_are_woken_from_another_thread(
    store: SpoolOutputStore,
) -> None:
    writer = Writer(store)
    big = os.urandom(6 * MIB)  # past one batch: read in the executor
    writer.write(OUT, big)

    async def follow() -> list[Chunk]:
        follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
        timer = threading.Timer(0.1, lambda: (writer.write(ERR, b"late"), store.close(JOB)))
        timer.start()
        got = []
        try:
            async with asyncio.timeout(20):
                async for chunk in follower:
                    got.append(chunk)
        finally:
            timer.join()
        return got

    got = asyncio.run(follow())
    assert runs(got) == [(OUT, 0, big), (ERR, 0, b"late")]


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (written back first), as memory pressure would."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


def test_an_async_replay_reads_cached_output_on_the_loop_and_the_rest_off_it(
    store: SpoolOutputStore,
) -> None:
    writer = Writer(store)
    payload = os.urandom(16 * MIB)
    writer.write(OUT, payload)
    store.close(JOB)

    async def replay(executor: CountingExecutor) -> bytes:
        asyncio.get_running_loop().set_default_executor(executor)
        follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
        parts = []
        while (chunks := await follower.aread(timeout=10)) is not None:
            parts.extend(c.data for c in chunks)
        return b"".join(parts)

    hot = CountingExecutor()
    assert asyncio.run(replay(hot)) == payload
    assert hot.calls == 0, "output in the page cache needs no thread"
    evict(store.directory / JOB / "stdout")
    cold = CountingExecutor()
    assert asyncio.run(replay(cold)) == payload
    assert cold.calls > 0, "output the page cache does not hold is read off the event loop"


def test_a_cancelled_async_read_skips_nothing(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    payload = os.urandom(16 * MIB)
    writer.write(OUT, payload)
    store.close(JOB)
    evict(store.directory / JOB / "stdout")  # so the read goes to a thread, and can be cancelled

    async def follow() -> bytes:
        follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
        parts = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):  # cancelled while its thread reads
                await follower.aread()
        while (chunks := await follower.aread(timeout=10)) is not None:
            parts.extend(c.data for c in chunks)
        return b"".join(parts)

    assert asyncio.run(follow()) == payload


def test_a_cancelled_wait_for_output_loses_nothing(store: SpoolOutputStore) -> None:
    writer = Writer(store)

    async def follow() -> list[Chunk]:
        follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await follower.aread()  # nothing yet: waits, then is cancelled
        writer.write(OUT, b"after")
        store.close(JOB)
        got = []
        async with asyncio.timeout(10):
            async for chunk in follower:
                got.append(chunk)
        return got

    assert runs(asyncio.run(follow())) == [(OUT, 0, b"after")]


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.sampled_from([OUT, ERR]), st.integers(min_value=1, max_value=5000)),
        min_size=1,
        max_size=60,
    ),
    quota=st.one_of(st.just(0), st.integers(min_value=1, max_value=100_000)),
    start_out=st.integers(min_value=0, max_value=60_000),
    start_err=st.integers(min_value=0, max_value=60_000),
)
def test_any_output_replays_as_written_from_any_start(
    writes: list[tuple[Stream, int]], quota: int, start_out: int, start_err: int
) -> None:
    """Whatever the interleaving, sizes, quota and start: every byte kept is delivered once,
    at its offset, in the order of arrival; what was lost is skipped; a restart changes none
    of it."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SpoolOutputStore(Path(tmp) / "output", SpoolConfig(max_bytes_per_job=quota))
        writer = Writer(store)
        kept: list[Chunk] = []
        for i, (stream, size) in enumerate(writes):
            data = bytes([i % 251]) * size
            offset = writer.offsets[stream]
            lost = writer.write(stream, data)
            if lost < size:
                kept.append(Chunk(JOB, stream, offset, data[: size - lost]))
        store.close(JOB)
        start = {OUT: start_out, ERR: start_err}
        expected = [
            Chunk(
                JOB, c.stream, max(c.offset, start[c.stream]), c.data[start[c.stream] - c.offset :]
            )
            if c.offset < start[c.stream]
            else c
            for c in kept
            if c.end > start[c.stream]
        ]
        for reader in (store, SpoolOutputStore(Path(tmp) / "output")):
            assert dict(reader.size(JOB)) == writer.offsets
            assert runs(drain(reader.follow(JOB, BOTH, start))) == runs(expected)


# --- restart ---------------------------------------------------------------------------------


def test_a_new_store_on_the_same_directory_replays_the_same_bytes_and_offsets(
    tmp_path: Path,
) -> None:
    first = SpoolOutputStore(tmp_path / "output")
    writer = Writer(first)
    interleaved(writer, seed=5)
    first.close(JOB)
    before = runs(drain(first.follow(JOB, BOTH, StartAt.BEGINNING)))

    second = SpoolOutputStore(tmp_path / "output")
    assert dict(second.size(JOB)) == writer.offsets
    assert runs(drain(second.follow(JOB, BOTH, StartAt.BEGINNING))) == before
    resumed = drain(second.follow(JOB, frozenset({OUT}), {OUT: 1000}))
    assert joined(resumed, OUT) == joined(writer.sent, OUT)[1000:]
    assert second.job_ids() == [JOB]


def test_after_a_crash_the_unclosed_job_replays_every_byte_and_its_followers_end(
    tmp_path: Path,
) -> None:
    """No close: the last records were still buffered, the process 'died'. The bytes are in
    the files; each stream replays exactly, and a follower does not wait for more."""
    first = SpoolOutputStore(tmp_path / "output")
    writer = Writer(first)
    interleaved(writer, seed=6, count=500)
    second = SpoolOutputStore(tmp_path / "output")
    assert dict(second.size(JOB)) == writer.offsets
    follower = second.follow(JOB, BOTH, StartAt.BEGINNING)
    replay = drain(follower, timeout=10)
    for stream in Stream:
        assert joined(replay, stream) == joined(writer.sent, stream)
    # What the index held before the crash is in its exact order (the last run it holds
    # may go on with bytes the index had not recorded yet).
    on_disk = (os.path.getsize(tmp_path / "output" / JOB / "index") - 16) // 16
    assert on_disk > 1
    assert runs(replay)[: on_disk - 1] == runs(writer.sent)[: on_disk - 1]


def test_a_torn_or_damaged_index_costs_order_not_bytes(tmp_path: Path) -> None:
    first = SpoolOutputStore(tmp_path / "output")
    writer = Writer(first)
    interleaved(writer, seed=7, count=100)
    first.close(JOB)
    path = tmp_path / "output" / JOB / "index"
    raw = bytearray(path.read_bytes())
    raw[16 + 5 * 16 + 12] = 9  # record 5: a stream code that does not exist
    path.write_bytes(bytes(raw) + b"\x01\x02\x03")  # and a torn record at the end
    replay = drain(SpoolOutputStore(tmp_path / "output").follow(JOB, BOTH, StartAt.BEGINNING))
    assert runs(replay)[:4] == runs(writer.sent)[:4], "records before the damage keep their order"
    for stream in Stream:
        assert joined(replay, stream) == joined(writer.sent, stream)


def test_a_job_reopened_continues_after_what_its_files_hold(tmp_path: Path) -> None:
    first = SpoolOutputStore(tmp_path / "output")
    Writer(first).write(OUT, b"before ")
    second = SpoolOutputStore(tmp_path / "output")
    second.open(JOB)  # e.g. a queued job registered again after a restart
    assert second.append(Chunk(JOB, OUT, 7, b"after")) == 0
    second.close(JOB)
    assert runs(drain(second.follow(JOB, BOTH, StartAt.BEGINNING))) == [(OUT, 0, b"before after")]


def test_discard_removes_the_files_and_ends_followers(store: SpoolOutputStore) -> None:
    writer = Writer(store)
    writer.write(OUT, b"data")
    follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
    store.discard(JOB)
    assert not (store.directory / JOB).exists()
    assert follower.read(timeout=1) is None
    assert dict(store.size(JOB)) == {OUT: 0, ERR: 0}
    assert drain(store.follow(JOB, BOTH, StartAt.BEGINNING)) == []
    store.discard(JOB)  # twice: nothing to do


def test_an_unknown_job_has_no_output_and_leaves_nothing(store: SpoolOutputStore) -> None:
    assert dict(store.size(OTHER)) == {OUT: 0, ERR: 0}
    assert drain(store.follow(OTHER, BOTH, StartAt.BEGINNING)) == []
    assert os.listdir(store.directory) == []


# --- slow follower -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_follower_slower_than_a_job_writing_1_gib_receives_every_byte(
    store: SpoolOutputStore,
) -> None:
    """Default settings. The writer never waits for the follower; nothing is dropped."""
    writer = Writer(store)
    block = os.urandom(256 << 10)
    sent = hashlib.sha256()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(GIB // len(block)):
                data = i.to_bytes(8, "little") + block[8:]  # no two chunks alike
                sent.update(data)
                assert writer.write(OUT if i % 17 else ERR, data) == 0
            store.close(JOB)
        except BaseException as exc:
            errors.append(exc)

    follower = store.follow(JOB, frozenset({OUT, ERR}), StartAt.BEGINNING)
    producer = threading.Thread(target=produce)
    producer.start()
    received = hashlib.sha256()
    count = 0
    deadline = time.monotonic() + 300
    try:
        while (chunks := follower.read(timeout=30)) is not None:
            assert time.monotonic() < deadline
            for chunk in chunks:
                received.update(chunk.data)
                count += len(chunk.data)
            time.sleep(0.01)  # slower than the writer: it falls behind and catches up later
    finally:
        producer.join(300)
        store.discard(JOB)  # pytest keeps recent tmp dirs: not 1 GiB of them
    assert not errors, errors
    assert count == GIB
    assert received.hexdigest() == sent.hexdigest(), "cross-stream order and bytes both exact"


# --- losses: quota and disk full ------------------------------------------------------------


def test_past_the_quota_bytes_are_lost_counted_and_skipped(tmp_path: Path) -> None:
    store = SpoolOutputStore(tmp_path / "output", SpoolConfig(max_bytes_per_job=10))
    writer = Writer(store)
    assert writer.write(OUT, b"12345678") == 0
    assert writer.write(ERR, b"abcdef") == 4, "what fits is written, the rest is lost"
    assert writer.write(OUT, b"more") == 4
    assert writer.write(ERR, b"x" * 1000) == 1000
    store.close(JOB)
    assert dict(store.size(JOB)) == {OUT: 12, ERR: 1006}, "offsets go on past a loss"
    assert store.lost_bytes(JOB) == 1008
    chunks = drain(store.follow(JOB, BOTH, StartAt.BEGINNING))
    assert runs(chunks) == [(OUT, 0, b"12345678"), (ERR, 0, b"ab")]
    assert drain(store.follow(JOB, BOTH, {OUT: 9, ERR: 500})) == [], "inside a lost range"
    assert os.path.getsize(tmp_path / "output" / JOB / "stderr") == 2
    # The loss is recorded: a restarted store says the same.
    again = SpoolOutputStore(tmp_path / "output")
    assert dict(again.size(JOB)) == {OUT: 12, ERR: 1006}
    assert runs(drain(again.follow(JOB, BOTH, StartAt.BEGINNING))) == runs(chunks)


def test_a_gap_in_the_middle_of_a_stream_shows_in_the_offsets(tmp_path: Path) -> None:
    """Written, lost, written (the quota raised between two runs of the server): the follower
    jumps the lost range instead of reading the hole's zeros."""
    first = SpoolOutputStore(tmp_path / "output", SpoolConfig(max_bytes_per_job=4))
    writer = Writer(first)
    writer.write(OUT, b"abcd")
    assert writer.write(OUT, b"lost") == 4
    first.close(JOB)
    again = SpoolOutputStore(tmp_path / "output")
    again.open(JOB)
    assert dict(again.size(JOB)) == {OUT: 8, ERR: 0}
    assert again.append(Chunk(JOB, OUT, 8, b"efgh")) == 0
    again.close(JOB)
    chunks = drain(again.follow(JOB, BOTH, StartAt.BEGINNING))
    assert [(c.offset, c.data) for c in chunks] == [(0, b"abcd"), (8, b"efgh")]
    assert (tmp_path / "output" / JOB / "stdout").read_bytes() == b"abcd\0\0\0\0efgh"


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * (64 << 10)
        with pytest.raises(OSError, match="No space left"):
            for _ in range(1000):
                os.write(fd, block)
    finally:
        os.close(fd)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, always unmounted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_on_a_full_disk_appends_lose_bytes_without_raising_and_resume_when_space_returns(
    small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SpoolOutputStore(small_tmpfs / "output")
    writer = Writer(store)
    assert writer.write(OUT, b"A" * 100_000) == 0
    filler = small_tmpfs / "filler"
    fill(filler)
    caplog.set_level(logging.WARNING, logger="worker.spool")
    lost = [writer.write(OUT, b"B" * 300_000) for _ in range(5)]
    lost.append(writer.write(ERR, b"E" * 10_000))
    assert sum(lost) > 0 and lost[-2] == 300_000, f"nothing fits any more: {lost}"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per job, not one per chunk"
    assert "disk is full" in warnings[0].getMessage() and JOB in warnings[0].getMessage()

    filler.unlink()
    assert writer.write(OUT, b"C" * 50_000) == 0, "space is back: output is kept again"
    assert writer.write(ERR, b"F" * 10) == 0
    store.close(JOB)
    assert dict(store.size(JOB)) == writer.offsets
    chunks = drain(store.follow(JOB, BOTH, StartAt.BEGINNING))
    out = [c for c in chunks if c.stream is OUT]
    assert out[0].offset == 0 and out[-1].end == writer.offsets[OUT]
    kept = sum(len(c.data) for c in chunks)
    assert kept + writer.lost == sum(writer.offsets.values()), "every byte kept or counted lost"
    assert joined(chunks, OUT).endswith(b"C" * 50_000) and b"\0" not in joined(chunks, OUT)
    # The gap is where the lost bytes were: the C's start at their own offset.
    last = out[-1]
    assert last.data.endswith(b"C" * 50_000) and last.end == writer.offsets[OUT]
    assert runs(
        drain(SpoolOutputStore(small_tmpfs / "output").follow(JOB, BOTH, StartAt.BEGINNING))
    ) == runs(chunks)


# --- files, permissions, ids ---------------------------------------------------------------


def test_directories_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = SpoolOutputStore(tmp_path / "output")
        writer = Writer(store)
        writer.write(OUT, b"x")
        writer.write(ERR, b"y")
        store.close(JOB)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "output") == 0o700
    assert mode(tmp_path / "output" / JOB) == 0o700
    for name in ("stdout", "stderr", "index"):
        assert mode(tmp_path / "output" / JOB / name) == 0o600


def test_an_existing_output_directory_that_is_too_open_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "output").mkdir(mode=0o755)
    os.chmod(tmp_path / "output", 0o755)
    SpoolOutputStore(tmp_path / "output")
    assert stat.S_IMODE(os.lstat(tmp_path / "output").st_mode) == 0o700


def test_a_symlink_as_the_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "output").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotADirectoryError, match="symlink"):
        SpoolOutputStore(tmp_path / "output")


@pytest.mark.parametrize(
    "bad",
    ["../" + "a" * 29, "A" * 32, "", "a" * 31, "a" * 33, "a" * 16 + "/" + "a" * 15, "..", "g" * 32],
)
def test_a_bad_job_id_never_becomes_a_path(store: SpoolOutputStore, bad: str) -> None:
    for call in (
        lambda: store.open(bad),
        lambda: store.follow(bad, BOTH, StartAt.BEGINNING),
        lambda: store.size(bad),
        lambda: store.discard(bad),
    ):
        with pytest.raises(InvalidSpec, match="not a job id"):
            call()
    assert store.append(Chunk(bad, OUT, 0, b"data")) == 4, "refused and counted, never raised"
    assert os.listdir(store.directory) == []
    assert sorted(os.listdir(store.directory.parent)) == ["output"]


def test_files_are_made_only_when_output_needs_them(store: SpoolOutputStore) -> None:
    """A file costs more than anything else per job: none for a silent job, one for stdout
    only (its file is its order), the index once both streams or a loss need it."""
    store.open(OTHER)
    store.close(OTHER)
    assert not (store.directory / OTHER).exists()
    assert drain(store.follow(OTHER, BOTH, StartAt.BEGINNING)) == []

    writer = Writer(store)
    for _ in range(1000):
        writer.write(OUT, b"line of output\n")
    store.close(JOB)
    assert sorted(os.listdir(store.directory / JOB)) == ["stdout"]
    replay = drain(SpoolOutputStore(store.directory).follow(JOB, BOTH, StartAt.BEGINNING))
    assert runs(replay) == runs(writer.sent)

    third = "ab" * 16
    writer = Writer(store, third)
    writer.write(OUT, b"out")
    writer.write(ERR, b"err")
    store.close(third)
    path = store.directory / third / "index"
    assert path.stat().st_size == index.HEADER_SIZE + 2 * index.RECORD_SIZE


# --- through the engine -----------------------------------------------------------------------


def spool_engine(state_dir: Path, **spool: object) -> Engine:
    settings = EngineSettings(state_dir=str(state_dir), stop_grace=2.0, output_linger=0.5)
    return Engine(["spool"], Config(engine=settings, plugins={"spool": spool}))


def test_the_plugin_needs_a_state_directory() -> None:
    with pytest.raises(ConfigError, match="--state-dir or \\[engine\\] state_dir"):
        Engine(["spool"])


def test_a_bad_setting_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes_per_job"):
        spool_engine(tmp_path / "state", max_bytes_per_job=-1)
    with pytest.raises(ConfigError, match="read_chunk_bytes"):
        spool_engine(tmp_path / "state", read_chunk_bytes=1)


def test_an_engine_with_the_spool_keeps_a_jobs_output_in_files(tmp_path: Path) -> None:
    with spool_engine(tmp_path / "state") as engine:
        job = engine.submit(JobSpec("sh", ("-c", "head -c 300000 /dev/zero; echo err >&2")))
        assert engine.wait(job.id, timeout=20) is not None
        assert engine.output(job.id) == b"\0" * 300_000
        assert engine.output(job.id, Stream.STDERR) == b"err\n"
    files = tmp_path / "state" / "output" / job.id
    assert (files / "stdout").stat().st_size == 300_000
    # Another process's store (a restart) replays the same.
    replay = drain(
        SpoolOutputStore(tmp_path / "state" / "output").follow(job.id, BOTH, StartAt.BEGINNING)
    )
    assert joined(replay, Stream.STDOUT) == b"\0" * 300_000
    assert joined(replay, Stream.STDERR) == b"err\n"


def test_the_quota_through_the_engine_is_a_fact_on_the_job(tmp_path: Path) -> None:
    with spool_engine(tmp_path / "state", max_bytes_per_job=100_000) as engine:
        job = engine.submit(JobSpec("head", ("-c", "250000", "/dev/zero")))
        ended = engine.wait(job.id, timeout=20)
        assert ended is not None and ended.exit_code == 0, "the job keeps running past the quota"
        assert ended.facts["output_lost_bytes"] == 150_000
        assert dict(engine.output_size(job.id)) == {OUT: 250_000, ERR: 0}
        assert engine.output(job.id) == b"\0" * 100_000


@pytest.mark.slow
def test_a_slow_follower_of_a_real_1_gib_job_receives_every_byte(tmp_path: Path) -> None:
    with spool_engine(tmp_path / "state") as engine:
        job = engine.submit(JobSpec("head", ("-c", str(GIB), "/dev/urandom")))
        follower = engine.follow(job.id)
        received = hashlib.sha256()
        count = 0
        deadline = time.monotonic() + 300
        while (chunks := follower.read(timeout=30)) is not None:
            assert time.monotonic() < deadline
            for chunk in chunks:
                assert chunk.offset == count, "no gap, no overlap"
                received.update(chunk.data)
                count += len(chunk.data)
            time.sleep(0.005)
        ended = engine.wait(job.id, timeout=60)
        assert ended is not None and ended.exit_code == 0
        assert "output_lost_bytes" not in ended.facts or ended.facts["output_lost_bytes"] == 0
    assert count == GIB
    stdout = tmp_path / "state" / "output" / job.id / "stdout"
    try:
        with open(stdout, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == received.hexdigest()
    finally:
        stdout.unlink()  # pytest keeps recent tmp dirs: not 1 GiB of them
