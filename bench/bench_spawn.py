"""Benchmark: the spawn-path targets of issue 18, as ratios measured side by side in one run.

1. submit→exit of /bin/true, engine without plugins vs ``subprocess.run(["/bin/true"])``
   (median); target ≤ 1.5x.
2. the same with ``cgroups`` vs the engine without plugins; target ≤ 2x. Beside it, for
   context, the engine with ``cgroups`` against the same cgroups made by hand (no target).
3. the same with ``cgroups,netns,pidns`` vs that confinement by hand; target ≤ 1.5x.
   Beside it, the engine with ``runas`` (what ``worker serve`` gives every job: nobody, no
   capability, no_new_privs) against the engine without plugins (no target).
4. jobs/s from 8 threads each submitting and waiting, vs 8 threads of ``subprocess.run``;
   target ≥ 0.9x. Beside it, 8 threads with ``cgroups`` (no target).

"By hand" is what a careful user writes in Python without the engine, per job: mkdir a
fresh cgroup in each v1 hierarchy the ``cgroups`` plugin puts a job without limits in (the
set is not hard-coded: a job of the engine reads its own ``/proc/self/cgroup`` at start, and
the hierarchies where it is not in this process's cgroup are the set; it is printed), write
``pids.max`` (the plugin's default), ``os.fork``; in the child, write itself into each
``cgroup.procs``, then (row 3) ``unshare(CLONE_NEWNET|CLONE_NEWNS|CLONE_NEWPID)`` through
ctypes (Python 3.11 has no ``os.unshare``; util-linux ``unshare`` is not used), make ``/``
private, bring ``lo`` up (as the ``netns`` plugin does, so both do the same work), fork
again to be PID 1 and mount a fresh ``/proc``, exec /bin/true; the parent waits, then
removes the cgroups. Its stdio is inherited (the engine's jobs get pipes, read by its output
thread: part of what the engine costs). It runs in a small Python process of its own (this
file, ``--hand-helper``, without the engine imported), as a user's program without the
engine would: forking the benchmark process itself, with its threads and three engines'
memory, cost it about 1.5-1.7x more on this VM. cgroup v1 only (this VM's layout): on a v2
host the benchmark stops with a message.

The variants run side by side, interleaved: a run is rounds of small batches, one per
variant in a rotating order, so a change of load falls on all of them alike. A latency
figure is the median of the batches' medians; a jobs/s figure is all jobs over all batches'
time. ``--runs N`` repeats the whole measurement; the end is PASS/MISS per target over runs
(the verdict of the runs' median ratio, and in how many runs it passed).
Run as root (cgroups and namespaces need it):

    .venv/bin/python bench/bench_spawn.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import platform
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from _common import Row, median_seconds, print_table, rss_bytes

if TYPE_CHECKING:
    from worker_core import Config, Engine, JobSpec

TRUE = "/bin/true"
CGROUP_ROOT = Path("/sys/fs/cgroup")
THREADS = 8

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

# Exit codes of the by-hand child, naming the step that failed.
_STEPS = {
    120: "join cgroup", 121: "unshare", 122: "make / private", 123: "lo up",
    124: "mount /proc", 125: "exec", 126: "fork PID 1",
}  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p,
]  # fmt: skip


# ------------------------------------------------------------------------------------------
# the engine variants
# ------------------------------------------------------------------------------------------


def engine_config(parent: str) -> Config:
    from worker_core import Config

    return Config.from_mapping(
        {
            "engine": {"stop_grace": 1.0, "output_linger": 0.5},
            "plugins": {"cgroups": {"parent": parent}},
        }
    )


def run_job(engine: Engine, spec: JobSpec) -> None:
    job = engine.submit(spec)
    ended = engine.wait(job.id, timeout=30)
    if ended.exit_code != 0:  # None too: not ended, or ended without exiting
        raise RuntimeError(f"benchmark job failed: {ended}")


# ------------------------------------------------------------------------------------------
# which hierarchies the cgroups plugin uses for a job without limits
# ------------------------------------------------------------------------------------------


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``controllers -> path`` from a ``/proc/PID/cgroup`` text (``""`` is cgroup v2)."""
    found = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        found[controllers] = path
    return found


def v1_mounts() -> dict[frozenset[str], Path]:
    """The v1 hierarchies under /sys/fs/cgroup: their mount options -> mount point."""
    mounts = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup" and Path(fields[1]).parent == CGROUP_ROOT:
            mounts[frozenset(fields[3].split(","))] = Path(fields[1])
    return mounts


def plugin_hierarchies(engine: Engine) -> list[Path]:
    """Mount points of the hierarchies where the engine's job was not in our own cgroup."""
    from worker_core import JobSpec

    job = engine.submit(JobSpec("/bin/cat", args=["/proc/self/cgroup"]))
    ended = engine.wait(job.id, timeout=30)
    if ended.exit_code != 0:
        raise RuntimeError(f"cannot read a job's /proc/self/cgroup: {ended}")
    inside = parse_proc_cgroup(engine.output(job.id).decode())
    ours = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    moved = [c for c, path in inside.items() if ours.get(c) != path]
    if "" in moved:
        raise SystemExit("the cgroups plugin uses cgroup v2 here: the by-hand rows are v1 only")
    mounts = v1_mounts()
    found = []
    for controllers in moved:
        wanted = set(controllers.split(","))
        point = next((p for opts, p in mounts.items() if wanted <= opts), None)
        if point is None:
            raise RuntimeError(f"no mount for the v1 hierarchy {controllers!r}")
        found.append(point)
    if not any("pids" in p.name.split(",") for p in found):
        raise RuntimeError(f"the plugin's job is not in a pids hierarchy: {found}")
    return sorted(found)


# ------------------------------------------------------------------------------------------
# by hand: cgroups made per job, fork, unshare, exec
# ------------------------------------------------------------------------------------------


def _rmdir(path: Path, timeout: float = 5.0) -> None:
    # A cgroup refuses rmdir (EBUSY) until its last task has finished exiting.
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.001)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _step(code: int, ok: bool) -> None:
    if not ok:
        os._exit(code)


def _hand_child(procs: list[bytes], namespaces: bool) -> None:
    """In the forked child: join the cgroups, (un)share, exec. Never returns."""
    try:
        code = 120
        for path in procs:
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)
        if namespaces:
            flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID
            _step(121, _libc.unshare(flags) == 0)
            _step(122, _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0)
            code = 123
            _loopback_up()
            code = 126
            init = os.fork()  # the first child of the new PID namespace: its PID 1
            if init:
                _, status = os.waitpid(init, 0)
                os._exit(os.waitstatus_to_exitcode(status))
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            _step(124, _libc.mount(b"proc", b"/proc", b"proc", flags, None) == 0)
        code = 125
        os.execv(TRUE, [TRUE])
    except BaseException:
        os._exit(code)


@attrs.define
class HandCgroups:
    """Job cgroups made by hand under ``<mount>/<parent>/`` in each of ``mounts``."""

    mounts: list[Path]
    parent: str
    pids_max: int
    _count: int = 0
    _made: list[Path] = attrs.Factory(list)

    def __enter__(self) -> HandCgroups:
        for mount in self.mounts:
            path = mount / self.parent
            path.mkdir()
            self._made.append(path)
        return self

    def __exit__(self, *exc: object) -> None:
        for path in reversed(self._made):
            with contextlib.suppress(FileNotFoundError):
                for child in path.iterdir():
                    if child.is_dir():
                        _rmdir(child)
            _rmdir(path)
        self._made.clear()

    def run(self, namespaces: bool) -> None:
        """One job: mkdir its cgroups, write pids.max, fork, wait, rmdir."""
        self._count += 1
        name = f"hand-{self._count}"
        dirs: list[Path] = []
        pid = 0
        try:
            for mount in self.mounts:
                path = mount / self.parent / name
                path.mkdir()
                dirs.append(path)
                if (path / "pids.max").exists():
                    (path / "pids.max").write_text(str(self.pids_max))
            procs = [os.fsencode(path / "cgroup.procs") for path in dirs]
            pid = os.fork()
            if pid == 0:
                _hand_child(procs, namespaces)
            _, status = os.waitpid(pid, 0)
            pid = 0
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                raise RuntimeError(f"by-hand job failed: {_STEPS.get(code, code)}")
        finally:
            if pid:  # interrupted while it ran
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            for path in dirs:
                _rmdir(path)


def hand_helper(parent: str, pids_max: int, mounts: list[Path]) -> None:
    """The by-hand variants' own process: one line ``<cgroups|full> <n>`` in, the median of
    ``n`` such jobs (seconds) out, until end of input; then its cgroups are removed.

    A user confining jobs by hand has no engine in their process: forking the benchmark's
    (threads, three engines' memory) would charge the by-hand figure with what is not there.
    """
    with HandCgroups(mounts, parent, pids_max) as hand:
        print("ready", flush=True)
        for line in sys.stdin:
            variant, count = line.split()
            one_job = functools.partial(hand.run, namespaces=variant == "full")
            try:
                took = median_seconds(one_job, int(count), warmup=1)
            except Exception as exc:
                print(f"error {exc}", flush=True)
                continue
            print(took, flush=True)


class HandProcess:
    """The bench's side of :func:`hand_helper`: a small Python process of its own."""

    def __init__(self, parent: str, pids_max: int, mounts: list[Path]) -> None:
        argv = [sys.executable, __file__, "--hand-helper", parent, str(pids_max)]
        self._proc = subprocess.Popen(
            [*argv, *map(str, mounts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            if (line := self._line(30)) != "ready":
                raise RuntimeError(f"the by-hand helper did not start: {line!r}")
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float) -> str:
        assert self._proc.stdout is not None
        # One request, one line back: nothing is left in the text buffer for select to miss.
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"the by-hand helper did not answer in {timeout:g} s")
        return self._proc.stdout.readline().strip()

    def median(self, variant: str, count: int) -> float:
        """Median seconds of ``count`` by-hand jobs of ``variant`` (``cgroups`` or ``full``)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{variant} {count}\n")
        self._proc.stdin.flush()
        line = self._line(60 + count)
        if line.startswith("error ") or not line:
            raise RuntimeError(f"by-hand {variant}: {line.removeprefix('error ') or 'helper died'}")
        return float(line)

    def close(self) -> None:
        """End of input: the helper removes its cgroups and exits (killed if it does not)."""
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def __enter__(self) -> HandProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------
# interleaved measurement
# ------------------------------------------------------------------------------------------


def jobs_per_second_batch(one_job: Callable[[], object], per_thread: int) -> tuple[int, float]:
    """``THREADS`` threads each running ``per_thread`` jobs; (jobs, seconds)."""
    barrier = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(per_thread):
                one_job()
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    took = time.perf_counter() - start
    if errors:
        raise errors[0]
    return THREADS * per_thread, took


def rotations(names: list[str], rounds: int) -> Iterator[list[str]]:
    """The variants in a rotating order, one list per round (no position favours one)."""
    for i in range(rounds):
        k = i % len(names)
        yield names[k:] + names[:k]


#: A latency variant: the median seconds of a batch of ``n`` jobs.
Batch = Callable[[int], float]


def in_process(one_job: Callable[[], object]) -> Batch:
    return lambda n: median_seconds(one_job, n, warmup=1)


def latency_medians(variants: dict[str, Batch], rounds: int, batch: int) -> dict[str, float]:
    """Median of per-batch medians, in seconds, batches interleaved round by round."""
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for order in rotations(list(variants), rounds):
        for name in order:
            medians[name].append(variants[name](batch))
    return {name: statistics.median(values) for name, values in medians.items()}


def throughputs(
    variants: dict[str, Callable[[], object]], rounds: int, per_thread: int
) -> dict[str, float]:
    """Jobs/s over every batch, batches interleaved round by round."""
    jobs = dict.fromkeys(variants, 0)
    seconds = dict.fromkeys(variants, 0.0)
    for order in rotations(list(variants), rounds):
        for name in order:
            n, took = jobs_per_second_batch(variants[name], per_thread)
            jobs[name] += n
            seconds[name] += took
    return {name: jobs[name] / seconds[name] for name in variants}


@attrs.frozen
class Mode:
    latency_rounds: int
    latency_batch: int
    throughput_rounds: int
    throughput_per_thread: int

    @property
    def samples(self) -> int:
        return self.latency_rounds * self.latency_batch

    @property
    def jobs(self) -> int:
        return self.throughput_rounds * self.throughput_per_thread * THREADS


FULL = Mode(latency_rounds=30, latency_batch=10, throughput_rounds=5, throughput_per_thread=50)
QUICK = Mode(latency_rounds=6, latency_batch=8, throughput_rounds=2, throughput_per_thread=25)


def one_run(
    mode: Mode, latency: dict[str, Batch], rate: dict[str, Callable[[], object]]
) -> list[Row]:
    medians = latency_medians(latency, mode.latency_rounds, mode.latency_batch)
    ms = {name: seconds * 1e3 for name, seconds in medians.items()}
    js = throughputs(rate, mode.throughput_rounds, mode.throughput_per_thread)

    def slower(name: str, unit: str, value: float, base: float, limit: float | None) -> Row:
        ratio = value / base
        target = "(report)" if limit is None else f"≤ {limit:.2f}x"
        return Row(
            name, unit, value, base, ratio, target, None if limit is None else ratio <= limit
        )

    def faster(name: str, value: float, base: float, limit: float | None) -> Row:
        ratio = value / base
        target = "(report)" if limit is None else f"≥ {limit:.2f}x"
        return Row(
            name, "jobs/s", value, base, ratio, target, None if limit is None else ratio >= limit
        )

    hand = ms["hand cgroups"]
    return [
        slower("1. engine ÷ subprocess.run", "ms", ms["engine"], ms["subprocess"], 1.5),
        slower("2. cgroups ÷ engine", "ms", ms["cgroups"], ms["engine"], 2.0),
        slower("   cgroups ÷ by hand (cgroups)", "ms", ms["cgroups"], hand, None),
        slower("   by hand (cgroups) ÷ subprocess", "ms", hand, ms["subprocess"], None),
        slower("3. cg,netns,pidns ÷ by hand (same)", "ms", ms["full"], ms["hand full"], 1.5),
        slower("   cg,netns,pidns ÷ engine", "ms", ms["full"], ms["engine"], None),
        slower("   runas (serve's identity) ÷ engine", "ms", ms["runas"], ms["engine"], None),
        faster("4. 8 threads: engine ÷ subprocess", js["engine"], js["subprocess"], 0.9),
        faster("   8 threads: cgroups ÷ subprocess", js["cgroups"], js["subprocess"], None),
    ]  # fmt: skip


def summary(runs: list[list[Row]]) -> bool:
    """PASS/MISS per target over all runs; whether every target passed in every run."""
    print(f"\nsummary over {len(runs)} run(s): ratio per run, and the median's verdict")
    all_passed = True
    for i, row in enumerate(runs[0]):
        if row.passed is None:
            continue
        ratios = [run[i].ratio for run in runs]
        passed = [run[i].passed for run in runs]
        assert all(r is not None for r in ratios)
        med = statistics.median(r for r in ratios if r is not None)
        limit = float(row.target.split()[1].rstrip("x"))
        ok = med <= limit if row.target.startswith("≤") else med >= limit
        all_passed = all_passed and all(passed)
        shown = ", ".join(f"{r:.2f}" for r in ratios if r is not None)
        print(
            f"  {row.name:<44} {row.target:>8}  runs: {shown}  median {med:.2f}"
            f"  {'PASS' if ok else 'MISS'} ({sum(bool(p) for p in passed)}/{len(runs)} runs)"
        )
    return all_passed


def helper_main(argv: list[str]) -> None:
    """``--hand-helper PARENT PIDS_MAX MOUNT...``, as :class:`HandProcess` starts it."""
    parent, pids_max, *mounts = argv
    hand_helper(parent, int(pids_max), [Path(m) for m in mounts])


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    if sys.argv[1:2] == ["--hand-helper"]:
        helper_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs per variant")
    parser.add_argument("--runs", type=int, default=3, help="whole measurements (default 3)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("bench_spawn.py needs root (cgroups and namespaces)")
    # A plain kill must still run the clean-up below (engines closed, by-hand cgroups removed).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # Here, not at the top: the by-hand helper runs this file too and imports none of it.
    from worker_core import Engine, JobSpec
    from worker_plugins.cgroups.config import CgroupsConfig

    mode = QUICK if args.quick else FULL
    tag = uuid.uuid4().hex[:8]
    spec = JobSpec(TRUE)
    started = time.monotonic()
    print(
        f"worker spawn benchmark ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )
    print(
        f"latency: {mode.latency_rounds} rounds of {mode.latency_batch} per variant "
        f"({mode.samples} jobs); jobs/s: {mode.jobs} jobs per variant, {THREADS} threads"
    )

    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(Engine("", engine_config(f"worker-bench-{tag}-plain")))
        cgroups = stack.enter_context(Engine("cgroups", engine_config(f"worker-bench-{tag}-cg")))
        full = stack.enter_context(
            Engine("cgroups,netns,pidns", engine_config(f"worker-bench-{tag}-full"))
        )
        # serve's default identity for a job: nobody, no capability, no_new_privs.
        runas = stack.enter_context(Engine("runas", engine_config(f"worker-bench-{tag}-runas")))
        mounts = plugin_hierarchies(cgroups)
        if plugin_hierarchies(full) != mounts:
            raise RuntimeError("the two cgroups engines put a job in different hierarchies")
        pids_max = CgroupsConfig().default_pids_max
        names = ", ".join(p.name for p in mounts)
        print(f"by hand, in a process of its own: a cgroup in each of {names}")
        print(f"  (where the plugin's job was), pids.max {pids_max}")
        print(
            "by hand: os.fork, ctypes unshare(net|mount|pid), / private, lo up, fork PID 1, /proc"
        )
        hand = stack.enter_context(HandProcess(f"worker-bench-{tag}-hand", pids_max, mounts))

        def subprocess_run() -> None:
            subprocess.run([TRUE], check=True)

        rate: dict[str, Callable[[], object]] = {
            "subprocess": subprocess_run,
            "engine": lambda: run_job(plain, spec),
            "cgroups": lambda: run_job(cgroups, spec),
        }
        latency: dict[str, Batch] = {name: in_process(fn) for name, fn in rate.items()}
        latency["hand cgroups"] = lambda n: hand.median("cgroups", n)
        latency["full"] = in_process(lambda: run_job(full, spec))
        latency["hand full"] = lambda n: hand.median("full", n)
        latency["runas"] = in_process(lambda: run_job(runas, spec))
        for batch in latency.values():  # warm-up: first spawns, imports, allocator arenas
            batch(10)

        runs = []
        for i in range(args.runs):
            rows = one_run(mode, latency, rate)
            runs.append(rows)
            print(
                f"\nrun {i + 1} of {args.runs} ({time.monotonic() - started:.0f} s so far, "
                f"RSS {rss_bytes() / 2**20:.0f} MiB)"
            )
            print_table(rows)

    ok = summary(runs)
    verdict = "all targets met in every run" if ok else "some target missed"
    print(f"\n{verdict} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
