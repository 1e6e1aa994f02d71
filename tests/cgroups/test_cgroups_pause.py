"""Pause, resume and live usage through a real engine and real cgroups (v1 on this host).

The plugin's ``freeze_job``, ``signal_job`` and ``job_usage`` hooks are called the way the
engine calls them, through its plugin manager, on jobs the engine started; the job's CPU
time is read straight from its cgroup files, independently of the code under test, so
these engines put every job in every hierarchy (``hierarchies = "all"``; jobs in the pids
and freezer hierarchies alone are paused in ``test_cgroups_hierarchies.py``). The same
hooks on the v2 backend are in ``test_cgroups_v2_pause.py``.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import alive, wait_until

from worker_core import Config, EndReason, JobSpec, JobState
from worker_core._engine import Engine
from worker_core._model import Job
from worker_plugins.cgroups.plugin import CgroupsPlugin

MIB = 1 << 20

#: A job that burns a whole core until stopped.
BURN = JobSpec(command="/bin/sh", args=["-c", "while :; do :; done"])

#: More CPU time than this between two samples of a frozen job means it ran. A frozen task
#: accrues none; the margin only absorbs accounting of the tick in flight at the freeze.
FROZEN_EPSILON = 0.01

#: How long a frozen job is watched for progress it must not make.
WATCH = 0.5


def all_hierarchies(parent: str, **engine: object) -> Config:
    return Config.from_mapping(
        {"engine": engine, "plugins": {"cgroups": {"parent": parent, "hierarchies": "all"}}}
    )


@pytest.fixture
def engine(parent: str) -> Iterator[Engine]:
    """As the area's ``engine``, every job in every hierarchy (its cpuacct is read here)."""
    with Engine(plugins=["cgroups"], config=all_hierarchies(parent)) as e:
        yield e


def plugin_of(engine: Engine) -> CgroupsPlugin:
    plugin = engine.plugin_manager.get_plugin("cgroups")
    assert isinstance(plugin, CgroupsPlugin)
    return plugin


def cgroup_cpu_seconds(engine: Engine, job_id: str) -> float:
    """The job's CPU time as its cgroup files say (v1 ``cpuacct.usage`` or v2 ``cpu.stat``)."""
    for path in plugin_of(engine).cgroup_dirs(job_id):
        if (path / "cpuacct.usage").exists():
            return int((path / "cpuacct.usage").read_text()) / 1e9
        # v1's cpu hierarchy has a cpu.stat too, of throttling counts only.
        stat = path / "cpu.stat"
        fields = (
            dict(line.split() for line in stat.read_text().splitlines()) if stat.exists() else {}
        )
        if "usage_usec" in fields:
            return int(fields["usage_usec"]) / 1e6
    raise AssertionError(f"job {job_id} has no cgroup with CPU accounting")


def freeze(engine: Engine, job_id: str, frozen: bool) -> bool | None:
    result: bool | None = engine.plugin_manager.hook.freeze_job(
        job=engine.get(job_id), frozen=frozen
    )
    return result


def send(engine: Engine, job_id: str, signum: int) -> bool | None:
    result: bool | None = engine.plugin_manager.hook.signal_job(
        job=engine.get(job_id), signum=signum
    )
    return result


def usage(engine: Engine, job: Job) -> dict[str, int | float] | None:
    result: dict[str, int | float] | None = engine.plugin_manager.hook.job_usage(job=job)
    return result


def live_cpu(engine: Engine, job_id: str) -> float:
    """``cpu_seconds`` as ``job_usage`` reports it."""
    now = usage(engine, engine.get(job_id))
    assert now is not None, "job_usage gave no answer for a live job"
    return float(now["cpu_seconds"])


def burning(engine: Engine, spec: JobSpec = BURN) -> str:
    """Submit ``spec`` and wait until its cgroup has charged it some CPU time."""
    job = engine.submit(spec)
    assert wait_until(lambda: cgroup_cpu_seconds(engine, job.id) > 0.05, 30), "never ran"
    return job.id


def assert_no_progress(sample: Callable[[], float], epsilon: float = 0.0) -> None:
    before = sample()
    time.sleep(WATCH)
    after = sample()
    assert after - before <= epsilon, f"a frozen job progressed: {before} -> {after}"


def assert_progress(sample: Callable[[], float], beyond: float) -> None:
    assert wait_until(lambda: sample() > beyond, 30), f"no progress past {beyond} after thaw"


def test_pause_stops_cpu_time_and_resume_restarts_it(engine: Engine) -> None:
    job_id = burning(engine)
    cpu = lambda: cgroup_cpu_seconds(engine, job_id)  # noqa: E731
    assert freeze(engine, job_id, True) is True
    assert_no_progress(cpu, FROZEN_EPSILON)
    assert freeze(engine, job_id, True) is True  # pausing a paused job changes nothing
    frozen_at = cpu()
    assert_no_progress(cpu, FROZEN_EPSILON)

    assert freeze(engine, job_id, False) is True
    assert_progress(cpu, frozen_at + 0.05)
    assert freeze(engine, job_id, False) is True  # resuming a running job changes nothing
    # A second pause and resume work the same as the first.
    assert freeze(engine, job_id, True) is True
    assert_no_progress(cpu, FROZEN_EPSILON)
    assert freeze(engine, job_id, False) is True
    assert_progress(cpu, cpu() + 0.05)

    stopped = engine.stop(job_id, grace=0.5, timeout=15)
    assert stopped.end_reason is EndReason.STOPPED, stopped.message
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job_id))


#: The main process daemonizes a grandchild (new session, output detached) that appends a
#: byte to a file every few milliseconds, prints its pid and sleeps.
DAEMON_TICKING = """
import os, sys, time
path = sys.argv[1]
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode() + b"\\n")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        while True:
            os.write(out, b".")
            time.sleep(0.005)
    os._exit(0)
os.close(w)
grandchild = os.read(r, 64).decode().strip()
os.wait()
print(grandchild, flush=True)
time.sleep(1000)
"""


def test_a_daemonized_grandchild_is_frozen_too(engine: Engine, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    job = engine.submit(JobSpec(command=sys.executable, args=["-c", DAEMON_TICKING, str(ticks)]))
    assert wait_until(lambda: engine.output(job.id).strip() != b"", 15)
    grandchild = int(engine.output(job.id).split()[0])
    assert grandchild in plugin_of(engine).backend.procs(job.id)
    size = lambda: float(ticks.stat().st_size if ticks.exists() else 0)  # noqa: E731
    assert_progress(size, 0)

    assert freeze(engine, job.id, True) is True
    assert_no_progress(size)  # not one more byte: the grandchild does not run
    frozen_at = size()
    assert freeze(engine, job.id, False) is True
    assert_progress(size, frozen_at)

    stopped = engine.stop(job.id, grace=0.5, timeout=15)
    assert stopped.end_reason is EndReason.STOPPED, stopped.message
    assert wait_until(lambda: not alive(grandchild))
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job.id))


#: Holds 20 MiB it has written to (so the pages are charged), says so, then burns CPU.
HOLD_20_MIB = "x = b'a' * (20 << 20)\nprint('ready', flush=True)\nwhile True: pass\n"


def test_job_usage_reports_live_memory_and_growing_cpu(engine: Engine) -> None:
    job = engine.submit(JobSpec(command=sys.executable, args=["-c", HOLD_20_MIB]))
    assert wait_until(lambda: b"ready" in engine.output(job.id), 15)
    first = usage(engine, engine.get(job.id))
    assert first is not None
    assert set(first) == {"cpu_seconds", "memory_current"}
    assert first["memory_current"] >= 20 * MIB
    assert first["memory_current"] < 1024 * MIB  # plausible: bytes, not pages or KiB
    assert 0 < first["cpu_seconds"] < 600  # plausible: seconds, not ns or µs
    assert wait_until(lambda: live_cpu(engine, job.id) > first["cpu_seconds"], 30)

    # Paused: the figures still read, and the CPU time stands still.
    assert freeze(engine, job.id, True) is True
    paused = usage(engine, engine.get(job.id))
    assert paused is not None and paused["memory_current"] >= 20 * MIB
    assert_no_progress(lambda: float(live_cpu(engine, job.id)), FROZEN_EPSILON)

    engine.stop(job.id, grace=0.5, timeout=15)
    ended = engine.get(job.id)
    assert ended.state is JobState.ENDED
    assert usage(engine, ended) is None  # the plugin no longer holds it: nobody answers


def test_hooks_do_not_answer_for_a_job_the_plugin_does_not_hold(engine: Engine) -> None:
    stranger = Job(id="not-ours", owner=None, spec=BURN)
    hook = engine.plugin_manager.hook
    assert hook.freeze_job(job=stranger, frozen=True) is None
    assert hook.freeze_job(job=stranger, frozen=False) is None
    assert hook.job_usage(job=stranger) is None
    assert plugin_of(engine).backend.leftovers() == []


def test_a_signal_to_a_paused_job_waits_for_the_resume(engine: Engine) -> None:
    job_id = burning(engine)
    assert freeze(engine, job_id, True) is True
    assert send(engine, job_id, signal.SIGTERM) is True
    # Still frozen: no CPU, and nothing died (the signal is pending until it runs).
    cpu = lambda: cgroup_cpu_seconds(engine, job_id)  # noqa: E731
    assert_no_progress(cpu, FROZEN_EPSILON)
    assert engine.get(job_id).state is JobState.RUNNING
    pids = plugin_of(engine).backend.procs(job_id)
    assert pids and all(alive(p) for p in pids)

    assert freeze(engine, job_id, False) is True
    done = engine.wait(job_id, timeout=15)
    assert done.state is JobState.ENDED
    assert done.signal == signal.SIGTERM, (done.exit_code, done.signal, done.message)
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job_id))


def test_sigkill_ends_a_paused_job(engine: Engine) -> None:
    job_id = burning(engine)
    pids = plugin_of(engine).backend.procs(job_id)
    assert freeze(engine, job_id, True) is True
    assert send(engine, job_id, signal.SIGKILL) is True
    done = engine.wait(job_id, timeout=15)
    assert done.state is JobState.ENDED
    assert done.signal == signal.SIGKILL, (done.exit_code, done.signal, done.message)
    assert wait_until(lambda: not any(alive(p) for p in pids))
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job_id))


def test_stopping_a_paused_job_without_resuming_it(engine: Engine, parent: str) -> None:
    # The engine thaws before it stops; a stop that does not (or a resume that failed) must
    # still end the job and leave no frozen cgroup behind.
    job_id = burning(engine)
    pids = plugin_of(engine).backend.procs(job_id)
    assert freeze(engine, job_id, True) is True
    stopped = engine.stop(job_id, grace=0.5, timeout=15)
    assert stopped.state is JobState.ENDED
    assert stopped.end_reason is EndReason.STOPPED, stopped.message
    assert wait_until(lambda: not any(alive(p) for p in pids))
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job_id))


def test_a_paused_job_is_killed_and_removed_when_the_engine_closes(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=all_hierarchies(parent, stop_grace=0.5)) as engine:
        job_id = burning(engine)
        pids = plugin_of(engine).backend.procs(job_id)
        assert freeze(engine, job_id, True) is True
    assert wait_until(lambda: not any(alive(p) for p in pids))
    # The parent fixture asserts no job cgroup is left, and the parent is gone.


@pytest.mark.parametrize("frozen", [True, False])
def test_a_job_that_has_ended_gets_no_answer(engine: Engine, frozen: bool) -> None:
    job = engine.submit(JobSpec(command="/bin/true"))
    done = engine.wait(job.id, timeout=15)
    assert done.end_reason is EndReason.EXITED, done.message
    assert engine.plugin_manager.hook.freeze_job(job=done, frozen=frozen) is None
