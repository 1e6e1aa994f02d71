"""The in-memory output store on its own: a log per job, followers as positions in it."""

from __future__ import annotations

import asyncio
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from worker_core.plugin import Chunk, Config, StartAt, Stream
from worker_plugins.memory.output import MAX_READ_BYTES, JobLog, LogFollower
from worker_plugins.memory.plugin import MemoryPlugin

BOTH = frozenset(Stream)
OUT, ERR = Stream.STDOUT, Stream.STDERR


class Writer:
    """Appends chunks with correct per-stream offsets, as the engine does."""

    def __init__(self, log: JobLog) -> None:
        self.log = log
        self.offsets = {OUT: 0, ERR: 0}

    def write(self, stream: Stream, data: bytes) -> None:
        self.log.append(Chunk("j", stream, self.offsets[stream], data))
        self.offsets[stream] += len(data)


def read_all(follower: LogFollower) -> list[Chunk]:
    chunks: list[Chunk] = []
    while (batch := follower.read(timeout=1)) is not None:
        assert batch, "a closed log never makes a reader wait"
        chunks.extend(batch)
    return chunks


def data(chunks: list[Chunk], stream: Stream) -> bytes:
    return b"".join(c.data for c in chunks if c.stream is stream)


def test_a_follower_from_the_beginning_replays_then_ends_when_the_log_closes() -> None:
    log = JobLog(1 << 20)
    w = Writer(log)
    w.write(OUT, b"a")
    w.write(ERR, b"b")
    w.write(OUT, b"c")
    follower = LogFollower(log, BOTH, StartAt.BEGINNING)
    assert [(c.stream, c.offset, c.data) for c in follower.read(0) or []] == [
        (OUT, 0, b"a"),
        (ERR, 0, b"b"),
        (OUT, 1, b"c"),
    ]
    assert follower.read(timeout=0) == [], "nothing new: empty, not the end"
    log.close()
    assert follower.read(timeout=0) is None


def test_a_follower_from_the_end_sees_only_later_chunks() -> None:
    log = JobLog(1 << 20)
    w = Writer(log)
    w.write(OUT, b"old")
    follower = LogFollower(log, BOTH, StartAt.END)
    w.write(OUT, b"new")
    log.close()
    chunks = read_all(follower)
    assert [(c.offset, c.data) for c in chunks] == [(3, b"new")]


def test_a_blocked_reader_is_woken_by_an_append_from_another_thread() -> None:
    log = JobLog(1 << 20)
    follower = LogFollower(log, BOTH, StartAt.BEGINNING)
    timer = threading.Timer(0.1, lambda: Writer(log).write(OUT, b"x"))
    timer.start()
    start = time.monotonic()
    batch = follower.read(timeout=5)
    timer.join()
    assert batch is not None and batch[0].data == b"x"
    assert time.monotonic() - start < 1


def test_aread_is_woken_by_an_append_from_another_thread() -> None:
    log = JobLog(1 << 20)
    follower = LogFollower(log, BOTH, StartAt.BEGINNING)

    async def main() -> list[Chunk] | None:
        threading.Timer(0.1, lambda: Writer(log).write(ERR, b"e")).start()
        return await follower.aread(timeout=5)

    batch = asyncio.run(main())
    assert batch is not None and batch[0].data == b"e"


def test_one_read_hands_out_a_bounded_batch() -> None:
    log = JobLog(1 << 30)
    w = Writer(log)
    for _ in range(10):
        w.write(OUT, b"x" * (1 << 20))
    follower = LogFollower(log, BOTH, StartAt.BEGINNING)
    first = follower.read(0) or []
    assert sum(len(c.data) for c in first) == MAX_READ_BYTES
    log.close()
    assert len(data(first + read_all(follower), OUT)) == 10 << 20


def test_past_the_cap_the_oldest_chunks_go_and_a_late_follower_sees_the_gap() -> None:
    log = JobLog(10)
    w = Writer(log)
    for piece in (b"0123", b"4567", b"89ab", b"cdef"):
        w.write(OUT, piece)
    log.close()
    chunks = read_all(LogFollower(log, BOTH, StartAt.BEGINNING))
    assert [(c.offset, c.data) for c in chunks] == [(8, b"89ab"), (12, b"cdef")]
    assert log.kept_bytes == 8


def test_a_chunk_bigger_than_the_cap_is_still_kept_whole() -> None:
    log = JobLog(4)
    Writer(log).write(OUT, b"too big for the cap")
    log.close()
    assert data(read_all(LogFollower(log, BOTH, StartAt.BEGINNING)), OUT) == b"too big for the cap"


pieces = st.lists(
    st.tuples(st.sampled_from([OUT, ERR]), st.binary(min_size=1, max_size=16)), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(pieces=pieces, out_at=st.integers(0, 600), err_at=st.integers(0, 600))
def test_resuming_from_any_offsets_gives_exactly_the_rest_of_each_stream(
    pieces: list[tuple[Stream, bytes]], out_at: int, err_at: int
) -> None:
    log = JobLog(1 << 20)
    w = Writer(log)
    for stream, piece in pieces:
        w.write(stream, piece)
    log.close()
    full = read_all(LogFollower(log, BOTH, StartAt.BEGINNING))
    resumed = read_all(LogFollower(log, BOTH, {OUT: out_at, ERR: err_at}))
    assert data(resumed, OUT) == data(full, OUT)[out_at:]
    assert data(resumed, ERR) == data(full, ERR)[err_at:]
    for stream, start in ((OUT, out_at), (ERR, err_at)):
        position = start  # contiguous from exactly where the follower asked to resume
        for chunk in (c for c in resumed if c.stream is stream):
            assert chunk.offset == position and chunk.data
            position = chunk.end
    # Order across the streams is the order of arrival, in a resumed follower too.
    assert [c.end for c in resumed] == [
        c.end for c in full if c.end > {OUT: out_at, ERR: err_at}[c.stream]
    ]


def test_the_store_opens_a_log_keeps_chunks_and_ends_followers_when_closed() -> None:
    plugin = MemoryPlugin()
    plugin.configure(Config.from_mapping({"plugins": {"memory": {"max_bytes_per_job": 64}}}))
    store = plugin.output
    assert store.config.max_bytes_per_job == 64
    store.open("j")
    follower = store.follow("j", BOTH, StartAt.BEGINNING)
    assert store.append(Chunk("j", OUT, 0, b"hi")) == 0, "nothing lost"
    assert store.size("j") == {OUT: 2, ERR: 0}
    store.close("j")
    assert data(read_all(follower), OUT) == b"hi"
    store.discard("j")
    assert store.size("j") == {OUT: 0, ERR: 0}, "a discarded job's output is gone"


def test_append_reports_the_bytes_dropped_past_the_per_job_cap() -> None:
    plugin = MemoryPlugin()
    plugin.configure(Config.from_mapping({"plugins": {"memory": {"max_bytes_per_job": 10}}}))
    store = plugin.output
    store.open("j")
    assert store.append(Chunk("j", OUT, 0, b"x" * 8)) == 0
    assert store.append(Chunk("j", OUT, 8, b"y" * 8)) == 8, "the oldest chunk made room"


def test_closing_a_follower_ends_it_and_wakes_a_blocked_reader() -> None:
    log = JobLog(1 << 20)
    follower = LogFollower(log, BOTH, StartAt.BEGINNING)
    threading.Timer(0.1, follower.close).start()
    assert follower.read(timeout=5) is None
    assert follower.read(timeout=0) is None
