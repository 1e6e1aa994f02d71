"""Following jobs' output files into the engine as they grow (``tail -f``, per stream).

Each job writes ``<id>.out`` and ``<id>.err`` in the output directory (Slurm opens them on
the node); the follower reads what was added since its offset and hands it to the engine in
order. A job whose files do not grow is read less often (its interval doubles, up to the
status poll interval), so thousands of quiet jobs cost few reads; any growth makes it quick
again. At the end the files are opened afresh and read to their end (on a network file
system, a fresh open is what guarantees seeing the last writes), so every byte is handed
over before the job is reported ended. Order within a stream is exact; across the two
streams it is the order in which the follower saw them.

Used from the executor's monitor thread only, except :meth:`OutputFollower.add`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

from worker_core.plugin import ExecutorEvents, Stream

log = logging.getLogger("worker.slurm")

#: Bytes read from one file per read at most (one chunk handed to the engine).
READ_BYTES = 1 << 20


@attrs.define
class _File:
    path: Path
    stream: Stream
    offset: int
    fd: int | None = None
    warned: bool = False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@attrs.define
class _Followed:
    files: list[_File]
    interval: float
    due: float = 0.0


class OutputFollower:
    """Hands each followed job's new output to ``events`` as its files grow."""

    def __init__(self, events: ExecutorEvents, min_interval: float, max_interval: float) -> None:
        self._events = events
        self._min = min_interval
        self._max = max(min_interval, max_interval)
        self._jobs: dict[str, _Followed] = {}
        self._lock = threading.Lock()

    def add(self, job_id: str, paths: Mapping[Stream, Path], offsets: Mapping[Stream, int]) -> None:
        """Follow ``job_id``'s files from ``offsets`` (0 for a new job)."""
        files = [_File(path, stream, offsets.get(stream, 0)) for stream, path in paths.items()]
        with self._lock:
            self._jobs[job_id] = _Followed(files, self._min)

    def following(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._jobs

    def read_due(self) -> None:
        """Read every job whose turn has come."""
        now = time.monotonic()
        with self._lock:
            due = [(job_id, f) for job_id, f in self._jobs.items() if f.due <= now]
        for job_id, followed in due:
            grew = any([self._read(job_id, file) for file in followed.files])
            followed.interval = self._min if grew else min(self._max, followed.interval * 2)
            followed.due = now + followed.interval

    def drain(self, job_id: str) -> None:
        """Hand over everything left in ``job_id``'s files and stop following it."""
        with self._lock:
            followed = self._jobs.pop(job_id, None)
        if followed is None:
            return
        for file in followed.files:
            file.close()  # the next read opens it afresh
            while self._read(job_id, file):
                pass
            file.close()

    def forget(self, job_id: str) -> None:
        with self._lock:
            followed = self._jobs.pop(job_id, None)
        for file in followed.files if followed else ():
            file.close()

    def close(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, {}
        for followed in jobs.values():
            for file in followed.files:
                file.close()

    def _read(self, job_id: str, file: _File) -> bool:
        """One read of what ``file`` gained; True if it handed anything over."""
        if file.fd is None:
            try:
                file.fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False  # not started yet (or nothing ever written, on some systems)
            except OSError as exc:
                self._warn(file, f"cannot open {file.path}: {exc.strerror or exc}")
                return False
        try:
            size = os.fstat(file.fd).st_size
            if size < file.offset:
                self._warn(
                    file,
                    f"{file.path} is {size} bytes, shorter than the {file.offset} already "
                    "handed over: it was truncated or replaced; waiting for it to grow",
                )
                return False
            if size == file.offset:
                return False
            data = os.pread(file.fd, min(READ_BYTES, size - file.offset), file.offset)
        except OSError as exc:
            self._warn(file, f"cannot read {file.path}: {exc.strerror or exc}")
            file.close()
            return False
        if not data:
            return False
        file.offset += len(data)
        self._events.output(job_id, file.stream, data)
        return True

    def _warn(self, file: _File, message: str) -> None:
        if not file.warned:
            file.warned = True
            log.warning("%s", message)


def remove_files(paths: Mapping[Stream, Path]) -> None:
    for path in paths.values():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
