"""The spool output store's two byte paths, against the other ways the kernel moves bytes.

Writing: ``SpoolOutputStore.append`` (``os.pwrite`` of the bytes the engine already holds)
against a plain ``os.write`` loop; and, from a job's pipe, the engine's path (``os.read``,
then ``append``) against ``os.splice`` pipe→file (no copy through user space, but no bytes
for ``on_output`` observers either), ``os.tee`` + ``splice`` + a read of the tee'd copy
(zero-copy to the file *and* bytes for observers) and ``os.sendfile`` pipe→file.

Replaying a finished job: a follower (``read`` and ``aread``) against a plain read loop of
the same file, and ``sendfile`` file→socket against ``pread`` + ``send`` (what a transport
writing to a raw socket could gain; gRPC and TLS need the bytes in user space).

Two figures per path: MiB/s (wall clock), and the CPU the consuming thread spent per GiB
(``time.thread_time``; the pipe's producer, ``dd``, is another process), which is what the
path costs a busy 2-core host whatever the producer's speed. Files live in a temporary
directory (page cache); each figure is the best of ``--repeat``; every count is checked.

    .venv/bin/python bench/bench_spool.py           # 1 GiB per figure, best of 3 (~30 s)
    .venv/bin/python bench/bench_spool.py --quick   # 256 MiB per figure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from _common import Row, print_table, rss_bytes

from worker_core.plugin import Chunk, StartAt, Stream
from worker_plugins.spool.store import SpoolOutputStore

MIB = 1 << 20
GIB = 1 << 30
PIECE = MIB  # the engine reads a job's pipe (1 MiB) in pieces of up to this
F_SETPIPE_SZ = 1031
JOB = "0123456789abcdef0123456789abcdef"
BOTH = frozenset(Stream)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.restype = ctypes.c_ssize_t
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]


def tee(fd_in: int, fd_out: int, length: int) -> int:
    """tee(2), which the os module does not wrap: duplicate pipe contents without consuming them."""
    n = _libc.tee(fd_in, fd_out, length, 0)
    if n < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(n)


@attrs.frozen
class Took:
    wall: float
    cpu: float  # of the measuring thread


class Clock:
    """Wall and thread CPU time from creation to :meth:`stop`."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.thread_time()

    def stop(self) -> Took:
        return Took(time.perf_counter() - self._wall, time.thread_time() - self._cpu)


def best(repeat: int, run: Callable[[], Took]) -> Took:
    runs = [run() for _ in range(repeat)]
    return Took(min(t.wall for t in runs), min(t.cpu for t in runs))


@contextlib.contextmanager
def job_pipe(size: int) -> Iterator[int]:
    """The read end of a pipe (1 MiB, as the engine's) that ``dd`` fills with SIZE bytes."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(read_fd, F_SETPIPE_SZ, PIECE)
    proc = subprocess.Popen(
        ["dd", "if=/dev/zero", f"bs={PIECE}", f"count={size // PIECE}", "status=none"],
        stdout=write_fd,
    )
    os.close(write_fd)
    try:
        yield read_fd
    finally:
        os.close(read_fd)
        proc.kill()
        proc.wait()


def check(got: int, size: int, what: str) -> None:
    if got != size:
        raise SystemExit(f"{what}: moved {got} bytes, expected {size}")


def new_file(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


# --- writing -------------------------------------------------------------------------------


def plain_write(directory: Path, size: int) -> Took:
    block = os.urandom(PIECE)
    path = directory / "plain"
    fd = new_file(path)
    clock = Clock()
    for _ in range(size // PIECE):
        os.write(fd, block)
    took = clock.stop()
    os.close(fd)
    check(path.stat().st_size, size, "plain write")
    path.unlink()
    return took


def store_append(directory: Path, size: int) -> Took:
    block = os.urandom(PIECE)
    store = SpoolOutputStore(directory / "output")
    store.open(JOB)
    clock = Clock()
    for i in range(size // PIECE):
        if store.append(Chunk(JOB, Stream.STDOUT, i * PIECE, block)):
            raise SystemExit("append lost bytes")
    store.close(JOB)
    took = clock.stop()
    check(store.size(JOB)[Stream.STDOUT], size, "append")
    store.discard(JOB)
    return took


def pipe_read_append(directory: Path, size: int) -> Took:
    store = SpoolOutputStore(directory / "output")
    store.open(JOB)
    offset = 0
    with job_pipe(size) as fd:
        clock = Clock()
        while data := os.read(fd, PIECE):
            store.append(Chunk(JOB, Stream.STDOUT, offset, data))
            offset += len(data)
        store.close(JOB)
        took = clock.stop()
    check(store.size(JOB)[Stream.STDOUT], size, "read + append")
    store.discard(JOB)
    return took


def pipe_splice(directory: Path, size: int) -> Took:
    path = directory / "spliced"
    out = new_file(path)
    with job_pipe(size) as fd:
        clock = Clock()
        while os.splice(fd, out, PIECE):
            pass
        took = clock.stop()
    os.close(out)
    check(path.stat().st_size, size, "splice")
    path.unlink()
    return took


def pipe_tee_splice_read(directory: Path, size: int) -> Took:
    """tee the job's pipe into a second pipe, splice the first into the file, read the copy:
    the file gets its bytes without a user-space copy, observers get theirs by a read."""
    path = directory / "teed"
    out = new_file(path)
    copy_r, copy_w = os.pipe()
    fcntl.fcntl(copy_r, F_SETPIPE_SZ, PIECE)
    observed = 0
    with job_pipe(size) as fd:
        clock = Clock()
        while teed := tee(fd, copy_w, PIECE):
            moved = 0
            while moved < teed:
                moved += os.splice(fd, out, teed - moved)
            while teed > 0:
                data = os.read(copy_r, teed)  # what on_output observers would be handed
                observed += len(data)
                teed -= len(data)
        took = clock.stop()
    for fd in (out, copy_r, copy_w):
        os.close(fd)
    check(path.stat().st_size, size, "tee + splice")
    check(observed, size, "tee + splice: bytes observed")
    path.unlink()
    return took


def pipe_sendfile(directory: Path, size: int) -> Took | str:
    path = directory / "sent"
    out = new_file(path)
    try:
        with job_pipe(size) as fd:
            clock = Clock()
            try:
                while os.sendfile(out, fd, None, PIECE):
                    pass
            except OSError as exc:
                return f"unsupported ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
            took = clock.stop()
        check(path.stat().st_size, size, "sendfile")
        return took
    finally:
        os.close(out)
        path.unlink()


# --- replaying -----------------------------------------------------------------------------


def finished_job(directory: Path, size: int) -> SpoolOutputStore:
    block = os.urandom(PIECE)
    store = SpoolOutputStore(directory / "output")
    store.open(JOB)
    for i in range(size // PIECE):
        store.append(Chunk(JOB, Stream.STDOUT, i * PIECE, block))
    store.close(JOB)
    return store


def plain_read(path: Path, size: int) -> Took:
    fd = os.open(path, os.O_RDONLY)
    got = 0
    clock = Clock()
    while data := os.read(fd, 4 * MIB):
        got += len(data)
    took = clock.stop()
    os.close(fd)
    check(got, size, "plain read")
    return took


def follower_read(store: SpoolOutputStore, size: int) -> Took:
    follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
    got = 0
    clock = Clock()
    while (chunks := follower.read(timeout=10)) is not None:
        got += sum(len(c.data) for c in chunks)
    took = clock.stop()
    check(got, size, "follower read")
    return took


def follower_aread(store: SpoolOutputStore, size: int) -> Took:
    async def replay() -> tuple[int, Took]:
        follower = store.follow(JOB, BOTH, StartAt.BEGINNING)
        got = 0
        clock = Clock()
        while (chunks := await follower.aread(timeout=10)) is not None:
            got += sum(len(c.data) for c in chunks)
        return got, clock.stop()

    got, took = asyncio.run(replay())
    check(got, size, "follower aread")
    return took


def to_socket(path: Path, size: int, use_sendfile: bool) -> Took:
    """The file to one end of a socket pair, a thread draining the other."""
    a, b = socket.socketpair()
    received = [0]

    def drain() -> None:
        buffer = bytearray(4 * MIB)
        while n := b.recv_into(buffer):
            received[0] += n

    reader = threading.Thread(target=drain)
    reader.start()
    fd = os.open(path, os.O_RDONLY)
    clock = Clock()
    offset = 0
    if use_sendfile:
        while sent := os.sendfile(a.fileno(), fd, offset, 4 * MIB):
            offset += sent
    else:
        while data := os.pread(fd, 4 * MIB, offset):
            a.sendall(data)
            offset += len(data)
    a.shutdown(socket.SHUT_WR)
    reader.join()
    took = clock.stop()
    os.close(fd)
    a.close()
    b.close()
    check(received[0], size, "sendfile" if use_sendfile else "pread + send")
    return took


# --- the table -----------------------------------------------------------------------------


def rows_for(
    name: str, size: int, took: Took, baseline: Took, target: float | None = None
) -> list[Row]:
    """A rate row (ratio: higher is better, with ``target``) and a CPU row (lower is better)."""
    rate, base = size / MIB / took.wall, size / MIB / baseline.wall
    passed = None if target is None else rate / base >= target
    cpu, base_cpu = took.cpu * GIB / size, baseline.cpu * GIB / size
    return [
        Row(name, "MiB/s", rate, base, rate / base, f">= {target}" if target else "", passed),
        Row("  CPU of it", "s/GiB", cpu, base_cpu, cpu / base_cpu if base_cpu else None, "", None),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB per figure, best of 1")
    parser.add_argument("--repeat", type=int, default=None, help="best of N runs per figure")
    args = parser.parse_args()
    size = (256 if args.quick else 1024) * MIB
    r = args.repeat or (1 if args.quick else 3)
    rows: list[Row] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worker-bench-spool-") as tmp:
        directory = Path(tmp)

        plain_write(directory, size)  # warm: the first file's pages cost the page cache more
        write = best(r, lambda: plain_write(directory, size))
        rss_before = rss_bytes()
        append = best(r, lambda: store_append(directory, size))
        append_growth = (rss_bytes() - rss_before) / MIB
        rows += rows_for("append (bytes in hand) vs os.write", size, append, write, 0.8)

        read_append = best(r, lambda: pipe_read_append(directory, size))
        splice = best(r, lambda: pipe_splice(directory, size))
        teed = best(r, lambda: pipe_tee_splice_read(directory, size))
        rows += rows_for("pipe: read+append vs splice", size, read_append, splice)
        rows += rows_for("pipe: tee+splice+read vs read+append", size, teed, read_append)
        sent = pipe_sendfile(directory, size)
        sendfile_note = sent if isinstance(sent, str) else None
        if isinstance(sent, Took):
            rows += rows_for("pipe: sendfile vs read+append", size, sent, read_append)

        store = finished_job(directory, size)
        path = directory / "output" / JOB / "stdout"
        plain_read(path, size)  # warm: every replay below reads from the page cache
        plain = best(r, lambda: plain_read(path, size))
        rss_before = rss_bytes()
        follower = best(r, lambda: follower_read(store, size))
        replay_growth = (rss_bytes() - rss_before) / MIB
        follower_async = best(r, lambda: follower_aread(store, size))
        rows += rows_for("replay: follower.read vs plain read", size, follower, plain, 0.7)
        rows += rows_for("replay: follower.aread vs plain read", size, follower_async, plain, 0.7)
        send = best(r, lambda: to_socket(path, size, use_sendfile=False))
        sendfile = best(r, lambda: to_socket(path, size, use_sendfile=True))
        rows += rows_for("to a socket: sendfile vs pread+send", size, sendfile, send)
        store.discard(JOB)

    rows.append(Row("RSS growth, append of it all", "MiB", append_growth, None, None, "", None))
    rows.append(Row("RSS growth, replays of it", "MiB", replay_growth, None, None, "", None))
    print(f"{size // MIB} MiB per figure, pieces of {PIECE // MIB} MiB, best of {r}")
    if sendfile_note:
        print(f"pipe -> file with sendfile: {sendfile_note}")
    print_table(rows)
    print(f"total {time.perf_counter() - began:.1f} s")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
