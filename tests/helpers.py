"""Shared helpers of every test area: an engine with short timings, bounded waits, the one
reader of ``/proc`` (process state, parents, environment, status) and output helpers.

Everything waits with a bound: a test that hangs tells nobody anything.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from worker_core.plugin import Chunk, Config, Engine, Job, JobState, SpawnPlan, Stream, hookimpl

PY = sys.executable

#: Short timings so stops and lingering pipes do not slow the suite down.
FAST = {"engine": {"stop_grace": 2.0, "kill_timeout": 3.0, "output_linger": 0.5}}


def fast_config(**engine: Any) -> Config:
    return Config.from_mapping({"engine": {**FAST["engine"], **engine}})


@contextlib.contextmanager
def running_engine(plugins: Any = None, **engine_settings: Any) -> Iterator[Engine]:
    """An engine with short timings, closed (every job stopped) on the way out."""
    with Engine(plugins, fast_config(**engine_settings)) as engine:
        yield engine


# --- /proc: the one reader of process facts ------------------------------------------------


@attrs.frozen
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the tests read."""

    pid: int
    state: str  # R, S, D, T, Z (zombie), X (dead), ...
    ppid: int
    cpu_ticks: int  # user plus system time, in clock ticks


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat``; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command, is in parentheses and may itself hold spaces and ")": what
    # follows the last ")" is field 3 (state) onwards.
    fields = text[text.rfind(")") + 2 :].split()
    return ProcStat(pid, fields[0], int(fields[1]), int(fields[11]) + int(fields[12]))


def proc_status(pid: int) -> dict[str, str] | None:
    """``/proc/<pid>/status`` as ``{"VmRSS": "1234 kB", ...}``; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def proc_environ(pid: int) -> list[bytes] | None:
    """The ``NAME=value`` entries of the process's environment; None once it is gone (or
    when it is not ours to read)."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None


def proc_cmdline(pid: int) -> str:
    """The command line, arguments joined by spaces; empty once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pids() -> list[int]:
    """Every process on the host (that this namespace shows)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (one nobody reaped counts as dead)."""
    stat = proc_stat(pid)
    return stat is not None and stat.state not in {"Z", "X"}


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...)."""
    parents = {stat.pid: stat.ppid for p in pids() if (stat := proc_stat(p)) is not None}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def job_processes(job_id: str | None = None) -> list[int]:
    """Live processes whose environment carries ``WORKER_JOB_ID`` (the engine sets it in
    every job's), of any job or of ``job_id`` only."""
    prefix = b"WORKER_JOB_ID="
    found = []
    for pid in pids():
        environ = proc_environ(pid) or []
        ids = [entry[len(prefix) :] for entry in environ if entry.startswith(prefix)]
        if ids and (job_id is None or job_id.encode() in ids) and alive(pid):
            found.append(pid)
    return found


# --- waiting ------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    return wait_until(lambda: not alive(pid), timeout)


def kill_if_alive(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, 9)


def read_lines(engine: Engine, job_id: str, count: int, timeout: float = 5.0) -> list[str]:
    """The first ``count`` lines of the job's stdout, waiting (bounded) for them."""
    ok = wait_until(lambda: engine.output(job_id).count(b"\n") >= count, timeout)
    out = engine.output(job_id)
    assert ok, f"the job printed {out!r}, expected {count} lines"
    return out.decode().splitlines()[:count]


def read_pid_line(engine: Engine, job_id: str, timeout: float = 5.0) -> int:
    return int(read_lines(engine, job_id, 1, timeout)[0])


def drain(follower: Any, timeout: float = 20.0) -> list[Chunk]:
    """Every chunk until the follower ends; fails if that takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: list[Chunk] = []
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the follower did not end in time"
        batch = follower.read(timeout=remaining)
        if batch is None:
            return chunks
        chunks.extend(batch)


def joined(chunks: list[Chunk], stream: Stream) -> bytes:
    return b"".join(c.data for c in chunks if c.stream is stream)


def assert_contiguous(chunks: list[Chunk], stream: Stream, start: int = 0) -> int:
    """Offsets of ``stream``'s chunks follow each other without gap or overlap; returns the end."""
    position = start
    for chunk in chunks:
        if chunk.stream is stream:
            assert chunk.offset == position, f"{stream.value}: gap or overlap at {position}"
            position = chunk.end
    return position


class Recorder:
    """A throwaway plugin that records every job event it sees, in order, thread-safely."""

    name = "test-recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, value: Any) -> None:
        with self._lock:
            self.events.append((kind, value))

    def of(self, job_id: str) -> list[tuple[str, Any]]:
        with self._lock:
            return [(k, v) for k, v in self.events if v[0] == job_id]

    def states(self, job_id: str) -> list[JobState]:
        return [v[1] for k, v in self.of(job_id) if k == "state"]

    def kinds(self, job_id: str) -> list[str]:
        return [k for k, _ in self.of(job_id)]

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        self._add("state", (job.id, job.state, previous))

    @hookimpl
    def pre_spawn(self, job: Job, plan: Any) -> None:
        self._add("pre_spawn", (job.id, job.state))

    @hookimpl
    def on_output(self, job: Job, chunk: Chunk) -> None:
        self._add("on_output", (job.id, chunk.stream, chunk.offset, len(chunk.data)))

    @hookimpl
    def post_exit(self, job: Job, result: Any) -> None:
        self._add("post_exit", (job.id, result.exit_code, result.signal))


#: Starts a script that runs with the allocator settings `worker serve` applies (they are
#: process-wide, so such scripts run in a fresh interpreter), with a resident-set probe.
TUNED_PRELUDE = """
import gc, sys, time
from worker_core import _allocator as allocator
assert allocator.tune_for_streaming()
def rss_mib():
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024
"""


def run_python(code: str, *args: str, prelude: str = "") -> str:
    """Run ``prelude`` + ``code`` (dedented) in a fresh interpreter; its stdout, or fail."""
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class ForkPath:
    """Makes the launcher fork a job (not posix_spawn it): sets an rlimit (RLIMIT_CORE 0),
    which only a forked child can apply. ``named``: only for jobs of that name."""

    def __init__(self, named: str | None = None) -> None:
        self.named = named

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        if self.named is None or job.spec.name == self.named:
            plan.rlimits["RLIMIT_CORE"] = (0, 0)


def write_plugin_distribution(
    root: Path, module: str, source: str, entry_points: Mapping[str, str]
) -> None:
    """A distribution named after ``module`` (``worker_test_x`` -> ``worker-test-x``) in
    ``root``: the module's ``source`` and a ``.dist-info`` whose ``worker.plugins`` entry
    points (name -> ``module:attribute``) ``importlib.metadata`` finds on ``PYTHONPATH``
    the way it finds an installed plugin's."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{entry} = {target}\n" for entry, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[worker.plugins]\n{lines}")
