"""Output through the engine: replay and live follow, many followers, resume, stream order."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    PY,
    assert_contiguous,
    drain,
    joined,
    read_lines,
)

from worker_core.plugin import Chunk, EndReason, Engine, InvalidSpec, JobSpec, StartAt, Stream

# Numbered lines to both streams, interleaved, as fast as Python can write them.
INTERLEAVED = (
    "import sys\n"
    "n = int(sys.argv[1])\n"
    "out, err = sys.stdout, sys.stderr\n"
    "for i in range(n):\n"
    "    out.write(f'out {i:07d} ' + 'o' * 40 + '\\n')\n"
    "    err.write(f'err {i:07d} ' + 'e' * 20 + '\\n')\n"
    "    if i % 97 == 0:\n"
    "        out.flush(); err.flush()\n"
)


def interleaved(n: int) -> JobSpec:
    return JobSpec(PY, args=["-c", INTERLEAVED, str(n)])


def expected_lines(prefix: str, pad: str, n: int) -> list[bytes]:
    return [f"{prefix} {i:07d} {pad}\n".encode() for i in range(n)]


def test_stdout_and_stderr_are_kept_apart_and_each_keeps_its_exact_order(
    engine: Engine,
) -> None:
    n = 20_000
    job = engine.submit(interleaved(n))
    chunks = drain(engine.follow(job.id))
    assert engine.wait(job.id, 5).exit_code == 0
    out = joined(chunks, Stream.STDOUT).splitlines(keepends=True)
    err = joined(chunks, Stream.STDERR).splitlines(keepends=True)
    assert out == expected_lines("out", "o" * 40, n)
    assert err == expected_lines("err", "e" * 20, n)
    assert_contiguous(chunks, Stream.STDOUT)
    assert_contiguous(chunks, Stream.STDERR)


def test_a_hundred_megabytes_arrive_complete_with_contiguous_offsets(engine: Engine) -> None:
    total = 100_000_000
    job = engine.submit(JobSpec("/usr/bin/head", args=["-c", str(total), "/dev/zero"]))
    follower = engine.follow(job.id)
    received = 0
    position = 0
    # A bound on ending at all (about a second on an idle machine), not on speed.
    deadline = time.monotonic() + 120
    while (batch := follower.read(timeout=max(0.0, deadline - time.monotonic()))) is not None:
        assert time.monotonic() < deadline, "the follower did not end within 120 s"
        for chunk in batch:
            assert chunk.stream is Stream.STDOUT
            assert chunk.offset == position
            assert chunk.data.count(0) == len(chunk.data)
            position = chunk.end
            received += len(chunk.data)
    assert received == total == position
    ended = engine.wait(job.id, 30)
    assert ended.end_reason is EndReason.EXITED and ended.exit_code == 0


def test_many_followers_and_a_stalled_one_do_not_slow_the_job_and_all_get_identical_output(
    engine: Engine,
) -> None:
    # Not how fast the job runs beside them (speed is for bench/), but that the stalled
    # follower does not hold it back at all, and that everyone gets everything.
    n = 100_000  # about 8 MB over both streams: far more than a pipe holds
    job = engine.submit(interleaved(n))
    stalled = engine.follow(job.id)  # attached, never reads until the job has ended
    results: dict[str, list[Chunk]] = {}
    lock = threading.Lock()

    def thread_follower(name: str) -> None:
        chunks = drain(engine.follow(job.id), timeout=30)
        with lock:
            results[name] = chunks

    async def async_followers() -> None:
        async def one(name: str, iterate: bool) -> None:
            follower = engine.follow(job.id)
            chunks: list[Chunk] = []
            if iterate:
                async for chunk in follower:
                    chunks.append(chunk)
            else:
                while (batch := await follower.aread(timeout=30)) is not None:
                    chunks.extend(batch)
            with lock:
                results[name] = chunks

        await asyncio.wait_for(
            asyncio.gather(*(one(f"async-{i}", iterate=i % 2 == 0) for i in range(4))), 30
        )

    threads = [threading.Thread(target=thread_follower, args=(f"thread-{i}",)) for i in range(20)]
    threads.append(threading.Thread(target=asyncio.run, args=(async_followers(),)))
    for t in threads:
        t.start()
    # The job ends while the stalled follower has read nothing of its ~8 MB.
    ended = engine.wait(job.id, 60)
    assert ended.is_finished and ended.exit_code == 0, "the stalled follower held the job back"
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    want_out = b"".join(expected_lines("out", "o" * 40, n))
    want_err = b"".join(expected_lines("err", "e" * 20, n))
    assert len(results) == 24
    for name, chunks in results.items():
        assert joined(chunks, Stream.STDOUT) == want_out, name
        assert joined(chunks, Stream.STDERR) == want_err, name
    late = drain(stalled)
    assert joined(late, Stream.STDOUT) == want_out and joined(late, Stream.STDERR) == want_err


def wait_for_file_job(trigger: Path) -> JobSpec:
    script = (
        "import os, sys, time\n"
        "print('early', flush=True)\n"
        f"while not os.path.exists({str(trigger)!r}): time.sleep(0.01)\n"
        "print('late', flush=True)\n"
        "print('late-err', file=sys.stderr, flush=True)\n"
    )
    return JobSpec(PY, args=["-c", script])


def test_a_follower_from_the_end_sees_only_what_is_written_after_it_attached(
    engine: Engine, tmp_path: Path
) -> None:
    trigger = tmp_path / "go"
    job = engine.submit(wait_for_file_job(trigger))
    read_lines(engine, job.id, 1)
    live = engine.follow(job.id, start=StartAt.END)
    replay = engine.follow(job.id, start=StartAt.BEGINNING)
    trigger.touch()
    live_chunks = drain(live)
    assert joined(live_chunks, Stream.STDOUT) == b"late\n"
    assert joined(live_chunks, Stream.STDERR) == b"late-err\n"
    assert live_chunks[0].offset in (len(b"early\n"), 0)  # stdout resumes at 6, stderr at 0
    assert joined(drain(replay), Stream.STDOUT) == b"early\nlate\n"


def test_a_follower_resumes_from_per_stream_offsets(engine: Engine) -> None:
    job = engine.submit(interleaved(1000))
    engine.wait(job.id, 10)
    full = drain(engine.follow(job.id))
    out, err = joined(full, Stream.STDOUT), joined(full, Stream.STDERR)
    # Offsets in the middle of a chunk and at its boundary are both honoured exactly.
    for out_at, err_at in [(0, 0), (7, 13), (len(out) - 1, 0), (len(out), len(err))]:
        resumed = drain(engine.follow(job.id, start={Stream.STDOUT: out_at, Stream.STDERR: err_at}))
        assert joined(resumed, Stream.STDOUT) == out[out_at:]
        assert joined(resumed, Stream.STDERR) == err[err_at:]
        assert assert_contiguous(resumed, Stream.STDOUT, out_at) == len(out)
        assert assert_contiguous(resumed, Stream.STDERR, err_at) == len(err)


def test_a_follower_of_one_stream_sees_only_that_stream(engine: Engine) -> None:
    job = engine.submit(interleaved(100))
    chunks = drain(engine.follow(job.id, streams=[Stream.STDERR]))
    assert chunks and all(c.stream is Stream.STDERR for c in chunks)
    assert engine.output(job.id, Stream.STDERR) == joined(chunks, Stream.STDERR)


def test_a_follower_of_a_live_job_ends_once_the_job_ended_and_everything_was_read(
    engine: Engine,
) -> None:
    job = engine.submit(JobSpec("/bin/sh", args=["-c", "echo one; sleep 0.3; echo two"]))
    follower = engine.follow(job.id)
    first = follower.read(timeout=5)
    assert first is not None and b"".join(c.data for c in first) == b"one\n"
    assert follower.read(timeout=0) == [], "nothing new yet: an empty batch, not the end"
    rest = drain(follower, timeout=5)
    assert b"".join(c.data for c in rest) == b"two\n"
    assert engine.get(job.id).is_finished
    assert follower.read(timeout=0) is None, "an ended follower stays ended"


def test_close_wakes_a_blocked_reader_with_the_end(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
    follower = engine.follow(job.id)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(follower.read(timeout=10)))
    reader.start()
    time.sleep(0.1)  # let it block in read
    follower.close()
    reader.join(2)
    assert not reader.is_alive() and got == [None]


def test_output_of_a_job_that_wrote_nothing_is_empty_and_its_follower_ends(
    engine: Engine,
) -> None:
    job = engine.submit(JobSpec("/bin/true"))
    assert drain(engine.follow(job.id)) == []
    assert engine.output(job.id) == b"" and engine.output(job.id, Stream.STDERR) == b""


def test_follow_refuses_no_streams_and_negative_offsets(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/true"))
    with pytest.raises(InvalidSpec, match="streams"):
        engine.follow(job.id, streams=[])
    with pytest.raises(InvalidSpec, match="start"):
        engine.follow(job.id, start={Stream.STDOUT: -1})
