"""The spool output store: the engine feeds it every chunk, followers read the files.

Guarantees:

- :meth:`SpoolOutputStore.append` writes each chunk at its stream's offset with ``os.pwrite``
  to descriptors kept open while the job runs, wakes the job's followers, and never waits
  for them. It never raises: bytes it cannot keep (disk full, the per-job quota) are counted
  and returned, the loss is logged once per job, and the stream's offsets go on, so the loss
  is a gap a follower jumps (its record in the index says so).
- A job this store did not :meth:`~SpoolOutputStore.open` in this process (it ran before a
  restart, or a crash cut it short) is complete as its files hold it: its followers replay
  them, byte for byte at the same offsets, and end.
- Output is not fsynced: a crash of the process loses nothing the kernel was handed, a power
  loss may cost the last seconds the file system had not written back.
- Memory per job is a few records and counters, however much it writes; per follower, its
  position and one batch of index records.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

from worker_core.plugin import Chunk, StartPosition, Stream

from . import index
from .config import SpoolConfig
from .follower import SpoolFollower
from .joblog import JobLog
from .layout import check_job_id, is_job_id, private_directory

log = logging.getLogger("worker.spool")


class SpoolOutputStore:
    """Keeps every job's output in files under ``directory`` (made 0700) and serves followers."""

    def __init__(self, directory: Path, config: SpoolConfig | None = None) -> None:
        self.config = config or SpoolConfig()
        self.directory = private_directory(Path(directory))
        self._logs: dict[str, JobLog] = {}
        self._lock = threading.Lock()

    def _path(self, job_id: str) -> str:
        return os.path.join(self.directory, job_id)

    def _log(self, job_id: str, keep: bool) -> JobLog:
        """The job's log, built from its files the first time. One that has no files yet is
        remembered only with ``keep`` (an open), so probing ids costs no memory."""
        with self._lock:
            found = self._logs.get(job_id)
        if found is not None:
            return found
        path = self._path(job_id)
        scan = index.scan(path)  # outside the lock: appends to other jobs go on meanwhile
        log = JobLog(job_id, path, scan, self.config.max_bytes_per_job)
        if not (keep or scan.exists):
            return log
        with self._lock:
            return self._logs.setdefault(job_id, log)

    # OutputStore -------------------------------------------------------------------------

    def open(self, job_id: str) -> None:
        """A job was registered: make its files (or continue the ones it has) and accept output."""
        self._log(check_job_id(job_id), keep=True).start_writing()

    def append(self, chunk: Chunk) -> int:
        """Write ``chunk``; the bytes lost doing so (0 when all is kept). Never raises."""
        try:
            with self._lock:
                job_log = self._logs.get(chunk.job_id)
            if job_log is None:
                if not is_job_id(chunk.job_id):
                    log.error("output for %r dropped: not a job id", chunk.job_id[:80])
                    return len(chunk.data)
                self.open(chunk.job_id)  # the engine opens first; a direct caller may not
                job_log = self._log(chunk.job_id, keep=True)
            return job_log.append(chunk)
        except Exception:
            log.exception("job %s: output could not be kept", chunk.job_id[:80])
            return len(chunk.data)

    def close(self, job_id: str) -> None:
        """The job ended and its output was read to the end: flush, close its files, and end
        followers that have read everything."""
        with self._lock:
            job_log = self._logs.get(job_id)
        if job_log is not None:
            job_log.close()

    def follow(
        self, job_id: str, streams: frozenset[Stream], start: StartPosition
    ) -> SpoolFollower:
        """A follower of ``job_id``'s output from ``start``; see :mod:`.follower`."""
        job_log = self._log(check_job_id(job_id), keep=False)
        return SpoolFollower(job_log, frozenset(streams), start, self.config.read_chunk_bytes)

    def size(self, job_id: str) -> Mapping[Stream, int]:
        """Each stream's size: the offset its next byte will have (lost bytes included)."""
        job_log = self._log(check_job_id(job_id), keep=False)
        with job_log.notifier:
            return dict(job_log.sizes)

    def discard(self, job_id: str) -> None:
        """Remove the job's files; its followers end."""
        check_job_id(job_id)
        with self._lock:
            job_log = self._logs.pop(job_id, None)
        if job_log is not None:
            job_log.discard()
        try:
            shutil.rmtree(self._path(job_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Retention calls this for many jobs: one that cannot go must not stop the rest.
            log.warning("job %s: its output files could not be removed: %s", job_id, exc)

    # for the engine's owner ---------------------------------------------------------------

    def job_ids(self) -> list[str]:
        """Ids of the jobs with output on disk (e.g. to find output whose record is gone)."""
        return sorted(name for name in os.listdir(self.directory) if is_job_id(name))

    def lost_bytes(self, job_id: str) -> int:
        """Bytes of ``job_id``'s output this store could not keep, in this process."""
        with self._lock:
            job_log = self._logs.get(job_id)
        if job_log is None:
            return 0
        with job_log.notifier:
            return job_log.lost

    def shutdown(self) -> None:
        """Close every job still open (write its pending records, release its files)."""
        with self._lock:
            logs = list(self._logs.values())
        for job_log in logs:
            job_log.close()
