"""Only the v1 hierarchies a job needs (``hierarchies = "needed"``, the default), or all.

A job joins pids and freezer always; memory with a memory limit; cpu and cpuacct with a CPU
limit; blkio with an IO limit. Every per-job operation (signals, pause, usage, facts,
removal) works on that set, and a crashed run's jobs are found in whatever hierarchies they
used. Real v1 cgroups on this host; each test under its own parent.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from cgroup_helpers import DAEMONIZE, Held, v1_mounts
from cgroup_views import (
    MIB,
    config,
    hierarchies_of,
    hierarchy_names,
    mounted,
    plugin_of,
    v1_backend,
)
from helpers import alive, proc_stat, wait_until

from worker_core import ConfigError, EndReason, IOLimit, JobSpec, JobState, Limits
from worker_core._engine import Engine
from worker_core._model import Job
from worker_core.plugin import Config
from worker_plugins.cgroups.config import CgroupsConfig
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.v1 import V1Backend

SLEEP = ["sleep", "60"]
#: Burns a core until stopped.
BURN = ["sh", "-c", "while :; do :; done"]


def spec(argv: list[str], limits: Limits | None = None) -> JobSpec:
    return JobSpec(argv[0], args=argv[1:], limits=limits or Limits())


def started(engine: Engine, job_spec: JobSpec) -> Job:
    job = engine.submit(job_spec)
    assert wait_until(lambda: engine.get(job.id).state is JobState.RUNNING, 15), "never ran"
    return engine.get(job.id)


def where(pid: int) -> dict[str, str]:
    """The process's cgroup path in each v1 controller's hierarchy."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {c: line.split(":", 2)[2] for line in lines for c in line.split(":")[1].split(",")}


def vda() -> str:
    dev = Path("/sys/block/vda/dev")
    if not dev.exists():
        pytest.skip("no /dev/vda for an IO limit")
    return dev.read_text().strip()


@pytest.mark.parametrize(
    ("limits", "extra"),
    [
        (Limits(), ()),
        (Limits(pids_max=64), ()),
        (Limits(memory_max=64 * MIB), ("memory",)),
        (Limits(memory_high=64 * MIB), ("memory",)),
        (Limits(cpu=0.5), ("cpu", "cpuacct")),
        (Limits(cpu_weight=200), ("cpu", "cpuacct")),
        (None, ("blkio",)),  # an IO limit on this host's disk
    ],
    ids=["none", "pids", "memory", "memory-high", "cpu", "cpu-weight", "io"],
)
def test_a_job_joins_only_the_hierarchies_its_limits_need(
    engine: Engine, parent: str, limits: Limits | None, extra: tuple[str, ...]
) -> None:
    if limits is None:
        limits = Limits(io=(IOLimit(device=vda(), read_bps=64 * MIB),))
    backend = v1_backend(engine)
    expected = mounted(backend, "pids", "freezer", *extra)
    job = started(engine, spec(SLEEP, limits))
    assert hierarchies_of(backend, job.id) == expected
    assert {d.parent.parent for d in backend.job_dirs(job.id)} == {
        mount for mount, name in hierarchy_names(backend).items() if name in expected
    }
    assert job.pid is not None
    lines = where(job.pid)
    ours = f"/{parent}/{job.id}"
    for controller, path in lines.items():
        if controller in backend._mounts:
            joined = hierarchy_names(backend)[backend._mounts[controller]] in expected
            assert (path == ours) is joined, (controller, path)
    engine.stop(job.id, grace=0)
    assert wait_until(lambda: not backend.exists(job.id), 10)


def test_hierarchies_all_puts_every_job_in_every_hierarchy(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, hierarchies="all")) as engine:
        backend = v1_backend(engine)
        job = started(engine, spec(SLEEP))
        assert hierarchies_of(backend, job.id) == set(hierarchy_names(backend).values())
        assert job.pid is not None
        lines = where(job.pid)
        assert all(lines[c] == f"/{parent}/{job.id}" for c in backend._mounts)
        engine.stop(job.id, grace=0)
        assert wait_until(lambda: not backend.exists(job.id), 10)


def test_facts_come_from_the_hierarchies_a_job_is_in(parent: str) -> None:
    code = "x = b'a' * (32 << 20)"
    python = [sys.executable, "-c", code]
    with Engine(plugins=["cgroups"], config=config(parent)) as engine:
        plain = engine.wait(engine.submit(spec(python)).id, timeout=30)
        limited = engine.wait(engine.submit(spec(python, Limits(memory_max=256 * MIB))).id, 30)
        cpu = engine.wait(engine.submit(spec(python, Limits(cpu=1.0))).id, timeout=30)
    for done in (plain, limited, cpu):
        assert done.end_reason is EndReason.EXITED, done.message
        assert done.facts["oom_killed"] is False
        assert done.facts["cpu_seconds"] > 0  # the engine's own (rusage) or the cgroup's
    assert "memory_peak" not in plain.facts  # no memory cgroup, no peak
    assert limited.facts["memory_peak"] >= 32 * MIB
    assert "memory_peak" not in cpu.facts
    with Engine(plugins=["cgroups"], config=config(parent, hierarchies="all")) as engine:
        every = engine.wait(engine.submit(spec(python)).id, timeout=30)
    assert every.facts["memory_peak"] >= 32 * MIB


def cpu_ticks(pid: int) -> int:
    stat = proc_stat(pid)
    assert stat is not None, f"process {pid} is gone"
    return stat.cpu_ticks


def test_pause_resume_and_signals_work_for_a_job_without_a_memory_limit(
    engine: Engine,
) -> None:
    backend = v1_backend(engine)
    mounted(backend, "freezer")
    job = started(engine, spec(BURN))
    assert job.pid is not None
    assert "memory" not in hierarchies_of(backend, job.id)
    pid = job.pid
    assert wait_until(lambda: cpu_ticks(pid) > 5, 30), "never burnt CPU"
    paused = engine.pause(job.id)
    assert paused.state is JobState.PAUSED
    freezer = backend._dir("freezer", job.id) / "freezer.state"
    assert freezer.read_text().strip() == "FROZEN"
    before = cpu_ticks(pid)
    time.sleep(0.3)
    assert cpu_ticks(pid) - before <= 1, "a frozen job ran"  # one tick in flight at most
    assert engine.resume(job.id).state is JobState.RUNNING
    assert freezer.read_text().strip() == "THAWED"
    assert wait_until(lambda: cpu_ticks(pid) > before + 5, 30), "no progress after resume"
    engine.signal(job.id, signal.SIGTERM)
    done = engine.wait(job.id, timeout=15)
    assert done.signal == signal.SIGTERM, (done.exit_code, done.signal, done.message)
    assert wait_until(lambda: not backend.exists(job.id), 10)


def test_a_signal_reaches_a_daemonized_grandchild_of_a_job_without_limits(
    engine: Engine,
) -> None:
    backend = v1_backend(engine)
    job = started(engine, spec([sys.executable, "-c", DAEMONIZE + "\nimport time; time.sleep(60)"]))
    assert wait_until(lambda: engine.output(job.id).strip() != b"", 15)
    grandchild = int(engine.output(job.id).split()[0])
    assert grandchild in backend.procs(job.id)
    assert hierarchies_of(backend, job.id) == mounted(backend, "pids", "freezer")
    engine.signal(job.id, signal.SIGKILL)
    assert wait_until(lambda: not alive(grandchild), 15), "the grandchild escaped"
    assert engine.wait(job.id, timeout=15).signal == signal.SIGKILL
    assert wait_until(lambda: not backend.exists(job.id), 10)


def test_live_usage_of_a_job_outside_the_memory_and_cpuacct_hierarchies(
    engine: Engine,
) -> None:
    # Summed over the job's processes from /proc: resident memory and CPU time.
    hold = "x = b'a' * (24 << 20)\nprint('ready', flush=True)\nwhile True: pass\n"
    job = started(engine, spec([sys.executable, "-c", hold]))
    assert wait_until(lambda: b"ready" in engine.output(job.id), 15)
    first = engine.usage(job.id)
    assert set(first) == {"cpu_seconds", "memory_current"}
    assert 24 * MIB <= first["memory_current"] < 1024 * MIB
    assert 0 <= first["cpu_seconds"] < 600
    assert wait_until(lambda: engine.usage(job.id)["cpu_seconds"] > first["cpu_seconds"], 30)
    engine.stop(job.id, grace=0)
    assert engine.usage(job.id) == {}


def test_a_crashed_runs_jobs_are_found_in_whatever_hierarchies_they_used(parent: str) -> None:
    # A "needed" run made one job in pids and freezer, another with memory too, a third in
    # every hierarchy (an "all" run before it); then it died. The next start finds them all.
    crashed = V1Backend(v1_mounts(), parent, 4096, hierarchies="needed")
    plain, with_memory = "aa" * 16, "bb" * 16
    procs = crashed.create(plain, Limits())
    held = Held("import time; time.sleep(60)").join(procs).release()
    crashed.create(with_memory, Limits(memory_max=64 * MIB))
    everywhere = "cc" * 16
    for mount in dict.fromkeys(v1_mounts().values()):
        (mount / parent / everywhere).mkdir()
    try:
        assert hierarchies_of(crashed, plain) == mounted(crashed, "pids", "freezer")
        plugin = CgroupsPlugin()
        plugin.configure(engine=object(), config=config(parent))
        try:
            assert sorted(plugin.cleanup_leftovers()) == [plain, with_memory, everywhere]
            assert held.proc.wait(timeout=10) == -signal.SIGKILL
            for job_id in (plain, with_memory, everywhere):
                assert hierarchies_of(crashed, job_id) == set(), job_id
        finally:
            plugin.shutdown(engine=object())
    finally:
        held.close()


def test_backend_operations_use_the_jobs_own_hierarchies(parent: str) -> None:
    backend = V1Backend(v1_mounts(), parent, 4096, hierarchies="needed")
    held: Held | None = None
    job_id = "dd" * 16
    try:
        mounted(backend, "freezer", "memory", "cpuacct")
        procs = backend.create(job_id, Limits())
        assert len(procs) == len(mounted(backend, "pids", "freezer"))
        held = Held("import time; time.sleep(60)").join(procs).release()
        assert backend.exists(job_id)
        assert backend.procs(job_id) == [held.pid]
        stats = backend.stats(job_id)
        assert (stats.memory_peak, stats.cpu_seconds) == (None, None)
        usage = backend.usage(job_id)  # from /proc
        assert usage.memory_current is not None and usage.memory_current > 0
        assert usage.cpu_seconds is not None
        assert backend.freeze(job_id, True)
        assert (backend._dir("freezer", job_id) / "freezer.state").read_text() == "FROZEN\n"
        assert backend.freeze(job_id, False)
        backend.kill(job_id, signal.SIGTERM)
        assert held.proc.wait(timeout=10) == -signal.SIGTERM
        assert backend.remove(job_id)
        assert not backend.exists(job_id)
    finally:
        if held is not None:
            held.close()
        for leftover in backend.leftovers():
            backend.remove(leftover)
        backend.remove_parents()


def test_hierarchies_defaults_to_needed_and_is_validated() -> None:
    assert CgroupsConfig().hierarchies == "needed"
    settings = Config.from_mapping({"plugins": {"cgroups": {"hierarchies": "some"}}})
    with pytest.raises(ConfigError) as info:
        settings.section("cgroups", CgroupsConfig)
    assert "hierarchies must be one of needed, all" in str(info.value)
    assert "plugins.cgroups" in str(info.value)


def test_pause_hooks_do_not_answer_once_the_job_has_ended(engine: Engine) -> None:
    # Its cgroup may still be there, waiting for the housekeeping thread: the job is over.
    done = engine.wait(engine.submit(spec(["/bin/true"])).id, timeout=15)
    assert done.end_reason is EndReason.EXITED, done.message
    hook = engine.plugin_manager.hook
    assert hook.freeze_job(job=done, frozen=True) is None
    assert hook.job_usage(job=done) is None
    assert isinstance(plugin_of(engine), CgroupsPlugin)
