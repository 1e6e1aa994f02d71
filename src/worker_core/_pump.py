"""The output thread: reads every job's stdout and stderr pipes with one epoll loop.

A thread per pipe would cost two threads per job; one loop serves thousands of jobs and
never blocks on a follower, because followers read from the output store, not from here.

Each read becomes one chunk, and a chunk costs about the same whatever its size: the
engine's and the store's work for it, a wake-up of every follower, the GIL handed between
this thread and theirs. A job writing flat out into a pipe this loop drains at once is read
in slices of tens of KiB, so once a pipe has delivered :data:`BULK_BYTES` within
:data:`BULK_WINDOW` the loop pauses :data:`COALESCE_SECONDS` after its round and lets the
pipe fill: fewer, larger chunks for the same bytes (see :meth:`OutputPump._run`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable

from ._output import Stream

log = logging.getLogger("worker.pump")

#: The most one read takes (a pipe of PIPE_SIZE holds no more).
READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032

#: A pipe that delivered this much within BULK_WINDOW has a writer producing far faster than
#: a job printing lines (64 MB/s and more): the loop pauses for it after the round.
BULK_BYTES = 64 << 10
BULK_WINDOW = 1e-3
#: The pause (the sleep takes 150-200 µs here). A writer at 1-4 GB/s puts 0.2-0.7 MiB in
#: its pipe meanwhile: reads of about 500 KiB on average instead of tens of KiB, a 1 MiB
#: pipe seldom full, and a latency no follower can notice.
COALESCE_SECONDS = 100e-6
#: Pipes smaller than this are never waited for.
MIN_COALESCED_PIPE = 256 << 10


def enlarge_pipe(fd: int) -> None:
    # A larger pipe means fewer wake-ups and fewer, bigger chunks for a chatty job. Best
    # effort: an unprivileged process is capped by /proc/sys/fs/pipe-max-size.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def pipe_capacity(fd: int) -> int:
    """Bytes the pipe ``fd`` can hold (0 when ``fd`` is not a pipe)."""
    try:
        return fcntl.fcntl(fd, F_GETPIPE_SZ)
    except OSError:
        return 0


class _Pipe:
    """One read descriptor of a job, and how fast it has been delivering."""

    __slots__ = ("half", "job_id", "stream", "window_bytes", "window_start")

    def __init__(self, job_id: str, stream: Stream, fd: int) -> None:
        self.job_id = job_id
        self.stream = stream
        capacity = pipe_capacity(fd)
        # 0 (never bulk) for a descriptor that is no pipe, or a pipe so small (not enlarged:
        # pipe-max-size) that a bulk writer would fill it during the pause.
        self.half = capacity // 2 if capacity >= MIN_COALESCED_PIPE else 0
        self.window_start = 0.0
        self.window_bytes = 0

    def bulk(self, size: int, now: float) -> bool:
        """Count a read of ``size`` bytes at ``now`` (monotonic); whether the loop should let
        this pipe fill before reading it again.

        Not after a read of half the pipe or more: that writer is ahead of the loop, which
        must read again at once, not wait."""
        if now - self.window_start > BULK_WINDOW:
            self.window_start, self.window_bytes = now, 0
        self.window_bytes += size
        return self.window_bytes >= BULK_BYTES and size < self.half


class OutputPump:
    """``on_data(job_id, stream, data)`` for every read; ``on_closed(job_id)`` once both pipes are done."""

    def __init__(
        self,
        on_data: Callable[[str, Stream, bytes], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self._on_data = on_data
        self._on_closed = on_closed
        self._selector = selectors.EpollSelector()
        self._open: dict[str, set[int]] = {}  # job id -> read fds still open
        self._buffer = memoryview(bytearray(READ_SIZE))  # every read lands here first
        self._commands: list[tuple[str, str, list[tuple[int, Stream]]]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="worker-output", daemon=True)
        self._thread.start()

    def add(self, job_id: str, fds: list[tuple[int, Stream]]) -> None:
        """Start reading a job's pipes; the pump owns (and will close) the descriptors."""
        self._command("add", job_id, fds)

    def finish(self, job_id: str) -> None:
        """Read what is already in the job's pipes, then close them even if writers remain."""
        self._command("finish", job_id, [])

    def close(self) -> None:
        self._closed = True
        self._wake()
        self._thread.join(5.0)

    def _command(self, op: str, job_id: str, fds: list[tuple[int, Stream]]) -> None:
        with self._lock:
            self._commands.append((op, job_id, fds))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            while not self._closed:
                bulk = False
                ready = self._selector.select()
                now = time.monotonic()
                registered = self._selector.get_map()
                for key, _ in ready:
                    pipe: _Pipe | None = key.data
                    if pipe is None:
                        self._run_commands()
                    elif registered.get(key.fd) is key:
                        size = self._read(key.fd, pipe, drain=False)
                        bulk |= size > 0 and pipe.bulk(size, now)
                    # else: a command earlier in this round finished the job and closed the
                    # descriptor (its number may even be another pipe's now): nothing to read.
                if bulk:
                    # Let the bulk writer's pipe fill for a moment: the next read takes what
                    # it wrote meanwhile in one chunk, and the followers this round woke run
                    # without contending with this thread for the GIL.
                    time.sleep(COALESCE_SECONDS)
            for job_id in list(self._open):
                self._finish(job_id)
        finally:
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            commands, self._commands = self._commands, []
        for op, job_id, fds in commands:
            if op == "add":
                self._open[job_id] = set()
                for fd, stream in fds:
                    os.set_blocking(fd, False)
                    self._selector.register(fd, selectors.EVENT_READ, _Pipe(job_id, stream, fd))
                    self._open[job_id].add(fd)
                if not fds:
                    self._done(job_id)
            elif op == "finish":
                self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        for fd in list(self._open.get(job_id, ())):
            pipe: _Pipe = self._selector.get_key(fd).data
            self._read(fd, pipe, drain=True)
            if fd in self._open.get(job_id, ()):
                self._close_fd(job_id, fd)

    def _read(self, fd: int, pipe: _Pipe, drain: bool) -> int:
        """Read ``fd`` once (until it is empty with ``drain``); the size of the last read.

        Into this thread's own buffer, then copied into the chunk. The kernel copies out of
        a pipe holding the pipe's lock, and the job's next write waits for it (spinning).
        Straight into a new chunk, that copy also faults in every page of memory the process
        had not used yet (all of it while the store fills up): the job's writer then spent
        over half its CPU time spinning on the lock (perf, 1 GiB, 2-core VM). The buffer's
        pages stay mapped, so the lock is held for the copy alone. The chunk is allocated at
        exactly its size once the lock is released, which the allocator can serve from
        memory the store has freed (``os.read`` of a MiB allocates a MiB and shrinks it to
        what it got: with glibc's defaults a fresh mapping, faulted in, nearly every time)."""
        while True:
            try:
                size = os.readv(fd, [self._buffer])
            except BlockingIOError:
                return 0
            except OSError as exc:
                log.warning("job %s: reading %s failed: %s", pipe.job_id, pipe.stream.value, exc)
                size = 0
            if not size:
                self._close_fd(pipe.job_id, fd)
                return 0
            try:
                self._on_data(pipe.job_id, pipe.stream, bytes(self._buffer[:size]))
            except Exception:
                log.exception("job %s: output handler failed", pipe.job_id)
            if not drain:
                return size  # one read per wake-up keeps the loop fair between jobs

    def _close_fd(self, job_id: str, fd: int) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        fds = self._open.get(job_id)
        if fds is not None:
            fds.discard(fd)
            if not fds:
                self._done(job_id)

    def _done(self, job_id: str) -> None:
        del self._open[job_id]
        try:
            self._on_closed(job_id)
        except Exception:
            log.exception("job %s: output-closed handler failed", job_id)
