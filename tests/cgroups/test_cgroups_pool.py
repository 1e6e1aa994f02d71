"""The pool of ready cgroups: made ahead, renamed for one job, never reused, never left behind.

Real v1 cgroups on this host, each test under its own ``worker-test-*`` parent. A pool entry
is ``pool-<random>`` in the hierarchies every job uses; a job's cgroup that came from the
pool has the entry's inode (kernfs keeps it across rename(2)), which tells it from a cgroup
made anew.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cgroup_helpers import Held, v1_mounts
from cgroup_views import (
    MIB,
    config,
    hierarchy_names,
    job_dir_inode,
    plugin_of,
    ready_pool,
    v1_backend,
)
from helpers import wait_until

from worker_core import ConfigError, EndReason, JobSpec, JobState, Limits
from worker_core._engine import Engine
from worker_core._model import Job
from worker_core.plugin import Config, SpawnPlan
from worker_plugins.cgroups.config import CgroupsConfig
from worker_plugins.cgroups.fs import CgroupError
from worker_plugins.cgroups.names import check_job_id, is_pool_name, new_pool_name
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.v1 import V1Backend

SLEEP = JobSpec("sleep", args=["60"])


def cgroup_line(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if controller in line.split(":")[1].split(","):
            return line.split(":", 2)[2]
    raise AssertionError(f"no {controller} line for {pid}")


def running(engine: Engine, spec: JobSpec = SLEEP) -> Job:
    job = engine.submit(spec)
    assert wait_until(lambda: engine.get(job.id).state is JobState.RUNNING, 15), "never ran"
    return engine.get(job.id)


def test_a_job_takes_a_ready_cgroup_by_rename_and_it_is_never_reused(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=2)) as engine:
        backend = v1_backend(engine)
        taken: list[str] = []
        for _ in range(4):
            pool = ready_pool(engine)
            head = pool.ready()[0]
            inode = job_dir_inode(backend, head)
            job = running(engine)
            # The job's cgroup is that entry, renamed: same directory, the job's name.
            assert job_dir_inode(backend, job.id) == inode
            assert job.pid is not None
            assert cgroup_line(job.pid, "pids") == f"/{parent}/{job.id}"
            assert cgroup_line(job.pid, "freezer") == f"/{parent}/{job.id}"
            assert head not in backend.pool_leftovers()  # gone from disk under its old name
            taken.append(head)
            engine.stop(job.id, grace=0)
            assert wait_until(lambda: not backend.exists(job.id), 10)  # noqa: B023
        assert len(set(taken)) == len(taken), "an entry was handed out twice"
        assert not set(taken) & set(ready_pool(engine).ready())
        assert not set(taken) & set(backend.pool_leftovers())


def test_ready_cgroups_and_the_jobs_that_take_them_start_with_counters_at_zero(
    parent: str,
) -> None:
    # A first job uses CPU, memory and processes; then every ready cgroup, and the second
    # job's cgroup taken from them, counts nothing of it.
    first_code = (
        "import os, time\n"
        "x = b'a' * (64 << 20)\n"
        "kids = [os.fork() or (time.sleep(0.2), os._exit(0)) for _ in range(4)]\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.5: pass\n"
        "for _ in kids: os.wait()\n"
    )
    own = (
        "import re\n"
        "where = {c: p for _, cs, p in (l.split(':', 2) for l in open('/proc/self/cgroup')"
        ".read().splitlines()) for c in cs.split(',')}\n"
        "def read(c, f): return open(f'/sys/fs/cgroup/{c}{where[c]}/{f}').read().split()[0]\n"
        "print(where['pids'], read('pids', 'pids.current'), "
        "read('memory', 'memory.max_usage_in_bytes'), read('cpuacct', 'cpuacct.usage'), "
        "flush=True)\n"
        "import time; time.sleep(60)\n"  # until stopped: its cgroup is looked at meanwhile
    )
    settings = config(parent, pool_size=2, hierarchies="all")
    with Engine(plugins=["cgroups"], config=settings) as engine:
        backend = v1_backend(engine)
        first = engine.wait(
            engine.submit(JobSpec(sys.executable, args=["-c", first_code])).id, timeout=60
        )
        assert first.end_reason is EndReason.EXITED, first.message
        assert first.facts["memory_peak"] >= 64 * MIB
        assert first.facts["cpu_seconds"] >= 0.5
        pool = ready_pool(engine)
        for name in pool.ready():
            assert (backend._dir("pids", name) / "pids.current").read_text().strip() == "0"
            assert (backend._dir("memory", name) / "memory.max_usage_in_bytes").read_text() == (
                "0\n"
            )
            assert (backend._dir("cpuacct", name) / "cpuacct.usage").read_text() == "0\n"
        head = pool.ready()[0]
        inode = job_dir_inode(backend, head)
        job = engine.submit(JobSpec(sys.executable, args=["-c", own]))
        assert wait_until(lambda: b"\n" in engine.output(job.id), 30), "it printed nothing"
        assert job_dir_inode(backend, job.id) == inode, "the second job's cgroup is not pooled"
        second = engine.stop(job.id, grace=0, timeout=30)
        assert second.end_reason is EndReason.STOPPED, second.message
        where, pids, peak, cpu_ns = engine.output(job.id).decode().split()
        assert where == f"/{parent}/{job.id}"
        assert int(pids) <= 2  # the interpreter (and no process of the first job)
        assert int(peak) < 48 * MIB  # an interpreter's start, not the first job's 64 MiB
        assert int(cpu_ns) / 1e9 < first.facts["cpu_seconds"] / 2
        assert second.facts["memory_peak"] < first.facts["memory_peak"] / 2


def test_without_a_pool_each_job_makes_its_own_cgroup(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=0)) as engine:
        backend = v1_backend(engine)
        assert plugin_of(engine).pool is None
        job = running(engine)
        assert job.pid is not None
        assert cgroup_line(job.pid, "pids") == f"/{parent}/{job.id}"
        assert backend.pool_leftovers() == []
        engine.stop(job.id, grace=0)
        assert wait_until(lambda: not backend.exists(job.id), 10)
        assert backend.pool_leftovers() == []


def test_a_vanished_pool_entry_is_replaced_by_a_new_cgroup(
    parent: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=1)) as engine:
        backend = v1_backend(engine)
        [name] = ready_pool(engine).ready()
        for mount in hierarchy_names(backend):
            if (mount / parent / name).is_dir():
                (mount / parent / name).rmdir()  # someone removed it behind our back
        with caplog.at_level(logging.WARNING, logger="worker.cgroups"):
            done = engine.wait(engine.submit(JobSpec("/bin/true")).id, timeout=15)
        assert done.end_reason is EndReason.EXITED, done.message
        assert any(name in r.getMessage() and "anew" in r.getMessage() for r in caplog.records)
        assert wait_until(lambda: not backend.exists(done.id), 10)
        # The pool refills with a new entry.
        assert ready_pool(engine).ready() != [name]


def test_stale_pool_entries_of_an_earlier_run_are_removed_at_start(
    parent: str, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = list(dict.fromkeys(v1_mounts().values()))
    everywhere, some = "pool-0123456789ab", "pool-ba9876543210"  # an "all" run, a "needed" one
    leftover_job = "ab" * 16
    for mount in mounts:
        for name in (everywhere, leftover_job):
            (mount / parent / name).mkdir(parents=True)
    for controller in ("pids", "freezer"):
        (v1_mounts()[controller] / parent / some).mkdir()
    with caplog.at_level(logging.INFO, logger="worker.cgroups"):
        engine = Engine(plugins=["cgroups"], config=config(parent, pool_size=2)).start()
    try:
        backend = v1_backend(engine)
        for mount in mounts:
            for name in (everywhere, some, leftover_job):
                assert not (mount / parent / name).exists(), (mount, name)
        messages = [r.getMessage() for r in caplog.records if r.name == "worker.cgroups"]
        assert any(leftover_job in m and "leftover" in m for m in messages), messages
        assert not any("pool-" in m and "leftover cgroup" in m for m in messages), messages
        assert any("removed 2 ready cgroups" in m for m in messages), messages
        ours = ready_pool(engine).ready()
        assert not {everywhere, some} & set(ours)
        assert sorted(ours) == backend.pool_leftovers()
    finally:
        engine.close()


CRASHING_ENGINE = """
import sys, time
from worker_core import Config, Engine
settings = {"plugins": {"cgroups": {"parent": sys.argv[1], "pool_size": 3}}}
engine = Engine(["cgroups"], Config.from_mapping(settings)).start()
pool = engine.plugin_manager.get_plugin("cgroups").pool
deadline = time.monotonic() + 30
while len(pool.ready()) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
print(" ".join(pool.ready()), flush=True)
time.sleep(600)
"""


def test_a_crashed_engine_leaves_pool_entries_that_the_next_start_removes(parent: str) -> None:
    crashed = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ENGINE, parent], stdout=subprocess.PIPE, text=True
    )
    try:
        assert crashed.stdout is not None
        names = crashed.stdout.readline().split()
        assert len(names) == 3 and all(is_pool_name(n) for n in names), names
        crashed.send_signal(signal.SIGKILL)
        crashed.wait(timeout=10)
    finally:
        if crashed.poll() is None:
            crashed.kill()
            crashed.wait(timeout=10)
        if crashed.stdout is not None:
            crashed.stdout.close()
    pids = v1_mounts()["pids"] / parent
    assert all((pids / n).is_dir() for n in names), "a crash cannot remove its pool"
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=3)) as engine:
        assert not any((pids / n).exists() for n in names)
        assert not set(names) & set(ready_pool(engine).ready())
        done = engine.wait(engine.submit(JobSpec("/bin/true")).id, timeout=15)
        assert done.end_reason is EndReason.EXITED, done.message


def test_shutdown_removes_the_pool_and_the_parent(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=3)) as engine:
        backend = v1_backend(engine)
        names = ready_pool(engine).ready()
        assert sorted(names) == backend.pool_leftovers()
        done = engine.wait(engine.submit(JobSpec("/bin/true")).id, timeout=15)
        assert done.end_reason is EndReason.EXITED, done.message
    assert not any((mount / parent).exists() for mount in hierarchy_names(backend))


def test_a_ready_cgroup_made_after_shutdown_does_not_bring_the_parent_back(
    parent: str,
) -> None:
    # The housekeeping thread can still be making a ready cgroup when a loaded engine's
    # shutdown gives up waiting for it and removes the parents: that cgroup must fail, not
    # make the parent again (an empty subtree nobody would ever remove).
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=1)) as engine:
        backend = v1_backend(engine)
        ready_pool(engine)
    parents = backend.parent_dirs()
    assert not any(path.exists() for path in parents)
    with pytest.raises(CgroupError):
        backend.make_pool_entry(new_pool_name())
    assert not any(path.exists() for path in parents), "the parent was made again"


def test_the_backend_tells_pool_entries_from_jobs(parent: str) -> None:
    backend = V1Backend(v1_mounts(), parent, default_pids_max=512, hierarchies="needed")
    held: Held | None = None
    try:
        name = new_pool_name()
        backend.make_pool_entry(name)
        assert (backend._dir("pids", name) / "pids.max").read_text().strip() == "512"
        assert not (backend._dir("memory", name)).exists()  # only where every job goes
        procs = backend.create("cafe" * 8, Limits(), pooled=name)
        held = Held("import time; time.sleep(60)").join(procs).release()
        assert backend.leftovers() == ["cafe" * 8]
        assert backend.pool_leftovers() == []
        other = new_pool_name()
        backend.make_pool_entry(other)
        assert backend.pool_leftovers() == [other]
        assert backend.procs("cafe" * 8) == [held.pid]
        assert backend.remove("cafe" * 8)
        assert backend.remove_pool_entry(other)
        assert backend.leftovers() == backend.pool_leftovers() == []
    finally:
        if held is not None:
            held.close()
        for leftover in backend.leftovers() + backend.pool_leftovers():
            backend.remove(leftover)
        backend.remove_parents()


def test_a_job_limit_other_than_the_pools_default_is_written(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=1)) as engine:
        backend = v1_backend(engine)
        ready_pool(engine)
        job = running(engine, JobSpec("sleep", args=["60"], limits=Limits(pids_max=7)))
        assert (backend._dir("pids", job.id) / "pids.max").read_text().strip() == "7"
        engine.stop(job.id, grace=0)


# ------------------------------------------------------------------ names and settings


def test_pool_names_never_look_like_job_ids() -> None:
    name = new_pool_name()
    assert is_pool_name(name)
    assert not re.fullmatch(r"[0-9a-f]{32}", name)
    assert not is_pool_name(uuid.uuid4().hex)  # how the engine makes job ids
    with pytest.raises(CgroupError, match="pool"):
        check_job_id(name)


def test_pool_size_defaults_and_is_validated() -> None:
    assert CgroupsConfig().pool_size == 4
    assert (
        Config.from_mapping({"plugins": {"cgroups": {"pool_size": 0}}})
        .section("cgroups", CgroupsConfig)
        .pool_size
        == 0
    )
    for bad in (-1, 257, True, "4", 1.5):
        settings = Config.from_mapping({"plugins": {"cgroups": {"pool_size": bad}}})
        with pytest.raises(ConfigError) as info:
            settings.section("cgroups", CgroupsConfig)
        assert "pool_size" in str(info.value) and "plugins.cgroups" in str(info.value)


def test_v2_makes_each_job_cgroup_and_no_pool(tmp_path: Path) -> None:
    # cgroup v2 refuses rename(2) (EPERM), so there is no pool to take from; a fake v2
    # tree (this host's v2 hierarchy has no controllers) shows the plugin does not try.
    from cgroup_helpers import make_v2_tree

    root = make_v2_tree(tmp_path / "cgroup", "worker")
    plugin = CgroupsPlugin()
    plugin.configure(
        engine=object(),
        config=Config.from_mapping(
            {"plugins": {"cgroups": {"root": str(root), "parent": "worker"}}}
        ),
    )
    try:
        assert plugin.backend.version == "v2"
        plugin.startup(engine=object())
        plan = SpawnPlan(executable="/bin/true", argv=["true"], env={}, cwd="/")
        plugin.pre_spawn(job=Job(id="j1", owner=None, spec=JobSpec("true")), plan=plan)
        assert plan.cgroup_procs == [str(root / "worker" / "j1" / "cgroup.procs")]
        assert plugin.pool is None
        assert not [p for p in (root / "worker").iterdir() if is_pool_name(p.name)]
    finally:
        plugin.backend.remove_timeout = 0.1  # rmdir never succeeds on a plain directory tree
        plugin.shutdown(engine=object())
