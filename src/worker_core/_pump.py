"""The output thread: reads every job's stdout and stderr pipes with one epoll loop.

A thread per pipe would cost two threads per job; one loop serves thousands of jobs and
never blocks on a follower, because followers read from the output store, not from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import threading
from collections.abc import Callable

from ._output import Stream

log = logging.getLogger("worker.pump")

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


def enlarge_pipe(fd: int) -> None:
    # A larger pipe means fewer wake-ups and fewer, bigger chunks for a chatty job. Best
    # effort: an unprivileged process is capped by /proc/sys/fs/pipe-max-size.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


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
                for key, _ in self._selector.select():
                    if key.data is None:
                        self._run_commands()
                    else:
                        job_id, stream = key.data
                        self._read(key.fd, job_id, stream, drain=False)
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
                    self._selector.register(fd, selectors.EVENT_READ, (job_id, stream))
                    self._open[job_id].add(fd)
                if not fds:
                    self._done(job_id)
            elif op == "finish":
                self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        for fd in list(self._open.get(job_id, ())):
            key = self._selector.get_key(fd)
            _, stream = key.data
            self._read(fd, job_id, stream, drain=True)
            if fd in self._open.get(job_id, ()):
                self._close_fd(job_id, fd)

    def _read(self, fd: int, job_id: str, stream: Stream, drain: bool) -> None:
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("job %s: reading %s failed: %s", job_id, stream.value, exc)
                data = b""
            if not data:
                self._close_fd(job_id, fd)
                return
            try:
                self._on_data(job_id, stream, data)
            except Exception:
                log.exception("job %s: output handler failed", job_id)
            if not drain:
                return  # one read per wake-up keeps the loop fair between jobs

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
