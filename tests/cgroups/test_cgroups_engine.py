"""End to end through the engine: the launcher joins each job to its cgroup before exec.

Real enforcement on this host (root, cgroup v1 controllers); each test uses its own parent
and checks that no cgroup and no process is left behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from cgroup_helpers import DAEMONIZE
from helpers import alive, wait_until

from worker_core import EndReason, InvalidSpec, IOLimit, JobSpec, JobState, Limits
from worker_core._engine import Engine
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.v1 import V1Backend

MIB = 1 << 20


def plugin_of(engine: Engine) -> CgroupsPlugin:
    plugin = engine.plugin_manager.get_plugin("cgroups")
    assert isinstance(plugin, CgroupsPlugin)
    return plugin


def python(code: str, limits: Limits | None = None) -> JobSpec:
    return JobSpec(command=sys.executable, args=["-c", code], limits=limits or Limits())


def job_dir(engine: Engine, job_id: str, controller: str) -> Path:
    backend = plugin_of(engine).backend
    if not isinstance(backend, V1Backend):
        pytest.skip("reads v1 controller files; this host uses the v2 backend")
    return backend._dir(controller, job_id)


def test_job_runs_inside_its_cgroup_which_is_gone_after_exit(engine: Engine, parent: str) -> None:
    # No limit: by default (hierarchies = "needed") the job joins pids and freezer only, and
    # its facts are the engine's (cpu_seconds) without a memory_peak; tests/cgroups/
    # test_cgroups_hierarchies.py covers the other hierarchies.
    job = engine.submit(python("print(open('/proc/self/cgroup').read())"))
    done = engine.wait(job.id, timeout=15)
    assert done.end_reason is EndReason.EXITED, done.message
    lines = engine.output(job.id).decode().splitlines()
    for controller in ("pids", "freezer"):
        line = next(line for line in lines if f":{controller}:" in line)
        assert line.endswith(f"/{parent}/{job.id}"), line
    memory_line = next(line for line in lines if ":memory:" in line)
    assert job.id not in memory_line
    # Removed after the end is reported, by the plugin's housekeeping thread.
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job.id))
    assert done.facts["cpu_seconds"] > 0
    assert "memory_peak" not in done.facts
    assert done.facts["oom_killed"] is False


def test_oom_kill_is_reported(engine: Engine) -> None:
    job = engine.submit(python("x = b'a' * (256 << 20)", Limits(memory_max=64 * MIB)))
    done = engine.wait(job.id, timeout=30)
    assert done.state is JobState.ENDED
    assert done.end_reason is EndReason.OOM_KILLED, done.message
    assert done.facts["oom_killed"] is True
    assert done.facts["memory_peak"] <= 64 * MIB
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job.id))


def test_fork_bomb_is_contained_then_stopped(engine: Engine) -> None:
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    job = engine.submit(python(bomb, Limits(pids_max=32)))
    pids_dir = job_dir(engine, job.id, "pids")
    events = pids_dir / "pids.events"
    assert wait_until(lambda: int(events.read_text().split()[1]) > 0, 15), "pids.max never hit"
    seen: set[int] = set()
    for _ in range(20):  # watch it for a while: it stays at the limit
        current = int((pids_dir / "pids.current").read_text())
        assert current <= 32
        seen.update(plugin_of(engine).backend.procs(job.id))
        time.sleep(0.02)
    assert len(seen) >= 16
    stopped = engine.stop(job.id, grace=0.5, timeout=15)
    assert stopped.state is JobState.ENDED
    assert stopped.end_reason is EndReason.STOPPED, stopped.message
    assert wait_until(lambda: not any(alive(p) for p in seen))
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job.id))


def test_cpu_quarter_of_a_core(engine: Engine) -> None:
    # A loop that would burn a whole core for `wall` seconds. The quota caps it at a quarter
    # of a core; a busy host can only give it less, so the check is that ceiling (with room
    # for one CFS period's burst and the interpreter's start), never a floor.
    wall = 3.0
    busy = f"import time\nt = time.monotonic()\nwhile time.monotonic() - t < {wall}: pass"
    job = engine.submit(python(busy, Limits(cpu=0.25)))
    done = engine.wait(job.id, timeout=60)
    assert done.end_reason is EndReason.EXITED, done.message
    cpu_seconds = done.facts["cpu_seconds"]
    print(f"cpu=0.25: {cpu_seconds:.3f} cpu-s over {wall} s wall = {cpu_seconds / wall:.3f}")
    assert 0 < cpu_seconds <= 0.4 * wall, "the job used more than its quarter of a core"


def test_stop_reaches_a_daemonized_grandchild(engine: Engine) -> None:
    job = engine.submit(python(DAEMONIZE + "\nimport time; time.sleep(60)"))
    assert wait_until(lambda: engine.output(job.id).strip() != b"", 15)
    grandchild = int(engine.output(job.id).split()[0])
    assert alive(grandchild)
    assert grandchild in plugin_of(engine).backend.procs(job.id)
    stopped = engine.stop(job.id, grace=0.5, timeout=15)
    assert stopped.end_reason is EndReason.STOPPED, stopped.message
    assert wait_until(lambda: not alive(grandchild))
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job.id))


def test_a_daemon_left_by_an_exited_job_dies_with_it(engine: Engine) -> None:
    job = engine.submit(python(DAEMONIZE))  # the main process exits at once
    done = engine.wait(job.id, timeout=15)
    assert done.end_reason is EndReason.EXITED, done.message
    grandchild = int(engine.output(job.id).split()[0])
    assert wait_until(lambda: not alive(grandchild))
    assert wait_until(lambda: not plugin_of(engine).backend.exists(job.id))


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(cpu=float((os.cpu_count() or 1) + 1)), "limits.cpu"),
        (Limits(memory_max=1 * MIB), "limits.memory_max"),
        (Limits(io=(IOLimit(device="/dev/no-such-disk", read_bps=1),)), "limits.io"),
        (Limits(io=(IOLimit(device="4095:4095", read_bps=1),)), "limits.io"),
    ],
)
def test_unhonourable_limits_are_refused_and_nothing_is_created(
    engine: Engine, limits: Limits, field: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        engine.submit(python("pass", limits))
    assert info.value.field == field
    assert engine.list() == []
    assert wait_until(lambda: plugin_of(engine).backend.leftovers() == [])


def test_concurrent_jobs_each_get_and_lose_their_cgroup(engine: Engine) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        job = engine.submit(python("import time; time.sleep(0.2)", Limits(memory_max=32 * MIB)))
        with lock:
            ids.append(job.id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ids) == 8
    for job_id in ids:
        assert engine.wait(job_id, timeout=30).end_reason is EndReason.EXITED
    assert wait_until(lambda: plugin_of(engine).backend.leftovers() == [])
