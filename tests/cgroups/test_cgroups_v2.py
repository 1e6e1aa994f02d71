"""The cgroup v2 backend against a fake cgroup2-shaped directory tree.

This host is hybrid: its cgroup2 hierarchy carries no controllers, so the v2 backend cannot
enforce anything here. These tests check the backend's file writes and parsing against a
plain tmp directory laid out like a cgroup2 mount, with the kernel's part (populating a new
cgroup's interface files, updating ``cgroup.events``) played by the test. The same logic
that is shared with v1 (freeze/signal/thaw, removal, leftovers) is tested for real in
``test_cgroups_v1.py``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from cgroup_helpers import V2_FILES, Held
from helpers import alive, wait_until

from worker_core._model import ExitResult, Job
from worker_core.plugin import Config, InvalidSpec, IOLimit, JobSpec, Limits, SpawnPlan
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.v2 import V2Backend

MIB = 1 << 20
PARENT = "worker"


def make_tree(root: Path, *, omit: Iterable[str] = (), extra: Iterable[str] = ()) -> Path:
    """A cgroup2 root with controllers, and the parent as the kernel would populate it."""
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    parent = root / PARENT
    parent.mkdir()
    for name in (*V2_FILES, *extra):
        if name not in omit:
            (parent / name).write_text("")
    (parent / "cgroup.controllers").write_text("cpu io memory pids\n")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "cgroup")


def backend(root: Path) -> V2Backend:
    return V2Backend(root, PARENT, default_pids_max=4096, freeze_timeout=0.2)


def read(path: Path) -> str:
    return path.read_text()


def test_prepare_enables_controllers_in_every_ancestor(tree: Path) -> None:
    caps = backend(tree).prepare()
    assert read(tree / "cgroup.subtree_control") == "+cpu +io +memory +pids"
    assert read(tree / PARENT / "cgroup.subtree_control") == "+cpu +io +memory +pids"
    assert caps.controllers == {"cpu", "io", "memory", "pids"}


def test_prepare_leaves_enabled_controllers_alone(tree: Path) -> None:
    (tree / "cgroup.subtree_control").write_text("cpu io memory pids\n")
    (tree / PARENT / "cgroup.controllers").write_text("memory pids\n")
    caps = backend(tree).prepare()
    assert read(tree / "cgroup.subtree_control") == "cpu io memory pids\n"
    assert read(tree / PARENT / "cgroup.subtree_control") == "+memory +pids"
    assert caps.controllers == {"memory", "pids"}


def test_create_writes_every_limit(tree: Path) -> None:
    disk = sorted(
        p for p in Path("/sys/block").iterdir() if not p.name.startswith(("loop", "zram"))
    )
    if not disk:
        pytest.skip("no block device")
    devno = (disk[0] / "dev").read_text().strip()
    limits = Limits(
        memory_max=64 * MIB,
        memory_high=32 * MIB,
        cpu=0.25,
        cpu_weight=50,
        io_weight=300,
        io=[
            IOLimit(device=devno, read_bps=1 << 20, write_bps=2 << 20, read_iops=10, write_iops=20)
        ],
        pids_max=32,
    )
    procs = backend(tree).create("job1", limits)
    job = tree / PARENT / "job1"
    assert procs == [str(job / "cgroup.procs")]
    assert read(job / "memory.max") == str(64 * MIB)
    assert read(job / "memory.swap.max") == "0"
    assert read(job / "memory.high") == str(32 * MIB)
    assert read(job / "cpu.max") == "25000 100000"
    assert read(job / "cpu.weight") == "50"
    assert read(job / "io.weight") == "default 300"
    assert read(job / "io.max") == f"{devno} rbps=1048576 wbps=2097152 riops=10 wiops=20"
    assert read(job / "pids.max") == "32"


def test_default_pids_max_is_always_written(tree: Path) -> None:
    backend(tree).create("job1", Limits())
    assert read(tree / PARENT / "job1" / "pids.max") == "4096"
    assert not (tree / PARENT / "job1" / "memory.max").exists()


def test_an_oom_kill_takes_the_whole_job(tmp_path: Path) -> None:
    backend(make_tree(tmp_path / "a")).create("job1", Limits())
    assert read(tmp_path / "a" / PARENT / "job1" / "memory.oom.group") == "1"
    # Before 4.19 there is no such file: nothing to write, and no error.
    root = make_tree(tmp_path / "b", omit=["memory.oom.group"])
    backend(root).create("job1", Limits(memory_max=8 * MIB))
    assert not (root / PARENT / "job1" / "memory.oom.group").exists()


def test_no_swap_accounting_means_no_swap_write(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cg", omit=["memory.swap.max"])
    backend(root).create("job1", Limits(memory_max=8 * MIB))
    assert read(root / PARENT / "job1" / "memory.max") == str(8 * MIB)
    assert not (root / PARENT / "job1" / "memory.swap.max").exists()


def test_io_weight_uses_bfq_when_io_weight_is_absent(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cg", omit=["io.weight"], extra=["io.bfq.weight"])
    backend(root).create("job1", Limits(io_weight=5000))
    assert read(root / PARENT / "job1" / "io.bfq.weight") == "default 1000"


def test_unavailable_controller_is_refused_and_nothing_created(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cg")
    (root / PARENT / "cgroup.controllers").write_text("memory pids\n")
    b = backend(root)
    with pytest.raises(InvalidSpec) as info:
        b.check(Limits(cpu=0.5))
    assert info.value.field == "limits.cpu"
    with pytest.raises(InvalidSpec):
        b.create("job1", Limits(io_weight=100))
    assert not (root / PARENT / "job1").exists()


def test_sigkill_writes_cgroup_kill(tree: Path) -> None:
    b = backend(tree)
    b.create("job1", Limits())
    # The fake kernel: a process is in the cgroup (cgroup.kill does the killing, not us).
    (tree / PARENT / "job1" / "cgroup.procs").write_text("999999999\n")
    b.kill("job1", signal.SIGKILL)
    assert read(tree / PARENT / "job1" / "cgroup.kill") == "1"
    assert not (tree / PARENT / "job1" / "cgroup.freeze").exists()


def test_an_empty_cgroup_is_neither_frozen_nor_killed(tree: Path) -> None:
    b = backend(tree)
    b.create("job1", Limits())
    b.kill("job1", signal.SIGKILL)
    assert not (tree / PARENT / "job1" / "cgroup.kill").exists()
    assert not (tree / PARENT / "job1" / "cgroup.freeze").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_freeze_signal_thaw_without_cgroup_kill(tmp_path: Path, signum: int) -> None:
    """Kernels before 5.14 have no cgroup.kill: freeze, signal every pid, thaw."""
    root = make_tree(tmp_path / "cg", omit=["cgroup.kill"])
    b = backend(root)
    b.create("job1", Limits())
    job = root / PARENT / "job1"
    held = Held("import time; time.sleep(60)")
    try:
        # The fake kernel: the process is in the cgroup, and the freeze has taken effect.
        (job / "cgroup.procs").write_text(f"{held.pid}\n")
        (job / "cgroup.events").write_text("populated 1\nfrozen 1\n")
        b.kill("job1", signum)
        assert held.proc.wait(timeout=5) == -signum
        assert read(job / "cgroup.freeze") == "0"  # thawed again
        assert not (job / "cgroup.kill").exists()
    finally:
        held.close()


def test_a_stuck_freeze_is_bounded(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cg", omit=["cgroup.kill"])
    b = backend(root)
    b.create("job1", Limits())
    held = Held("import time; time.sleep(60)")
    try:
        # The fake kernel: a process is in the cgroup, and the freeze never takes effect.
        (root / PARENT / "job1" / "cgroup.procs").write_text(f"{held.pid}\n")
        (root / PARENT / "job1" / "cgroup.events").write_text("populated 1\nfrozen 0\n")
        b.kill("job1", signal.SIGTERM)  # returns after freeze_timeout (0.2 s), then signals
        assert read(root / PARENT / "job1" / "cgroup.freeze") == "0"
        assert held.proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        held.close()


def test_stats_parse_memory_events_peak_and_cpu(tree: Path) -> None:
    b = backend(tree)
    b.create("job1", Limits(memory_max=64 * MIB))
    job = tree / PARENT / "job1"
    (job / "memory.events").write_text(
        "low 0\nhigh 3\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n"
    )
    (job / "memory.peak").write_text("67108864\n")
    (job / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    stats = b.stats("job1")
    assert stats.oom_killed is True
    assert stats.memory_peak == 64 * MIB
    assert stats.cpu_seconds == pytest.approx(1.5)


def test_stats_without_oom_or_peak(tree: Path) -> None:
    b = backend(tree)
    b.create("job1", Limits())
    job = tree / PARENT / "job1"
    (job / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    (job / "memory.peak").unlink(missing_ok=True)
    stats = b.stats("job1")
    assert (stats.oom_killed, stats.memory_peak, stats.cpu_seconds) == (False, None, None)


def test_leftovers_are_the_job_directories(tree: Path) -> None:
    b = backend(tree)
    (tree / PARENT / "stale1").mkdir()
    (tree / PARENT / "stale2").mkdir()
    assert b.leftovers() == ["stale1", "stale2"]


def test_nested_parent_enables_each_level(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    # The fake kernel populates the intermediate level; the backend creates the rest.
    (root / "system").mkdir()
    (root / "system" / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "system" / "worker").mkdir()
    for name in V2_FILES:
        (root / "system" / "worker" / name).write_text("")
    (root / "system" / "worker" / "cgroup.controllers").write_text("memory pids\n")
    V2Backend(root, "system/worker", 4096).prepare()
    assert read(root / "cgroup.subtree_control") == "+cpu +io +memory +pids"
    assert read(root / "system" / "cgroup.subtree_control") == "+cpu +io +memory +pids"
    assert read(root / "system" / "worker" / "cgroup.subtree_control") == "+memory +pids"


# ------------------------------------------------------------------ the plugin on v2


def plugin_on(root: Path) -> CgroupsPlugin:
    plugin = CgroupsPlugin()
    config = Config.from_mapping({"plugins": {"cgroups": {"root": str(root), "parent": PARENT}}})
    plugin.configure(engine=object(), config=config)
    assert plugin.backend.version == "v2"
    plugin.backend.remove_timeout = 0.1  # rmdir never succeeds on a plain directory tree
    return plugin


def test_plugin_chooses_v2_and_fills_the_plan(tree: Path) -> None:
    plugin = plugin_on(tree)
    spec = JobSpec(command=sys.executable, limits=Limits(memory_max=16 * MIB, cpu=0.5))
    fields = list(plugin.validate_spec(spec))
    assert "limits.memory_max" in fields and "limits.pids_max" in fields
    assert not (tree / PARENT / "j1").exists()  # validation creates nothing
    plan = SpawnPlan(executable=sys.executable, argv=["python"], env={}, cwd="/")
    job = Job(id="j1", owner=None, spec=spec)
    plugin.pre_spawn(job=job, plan=plan)
    assert plan.cgroup_procs == [str(tree / PARENT / "j1" / "cgroup.procs")]
    assert read(tree / PARENT / "j1" / "cpu.max") == "50000 100000"
    assert plugin.signal_job(job=job, signum=signal.SIGKILL) is True
    (tree / PARENT / "j1" / "memory.events").write_text("oom_kill 3\n")
    result = ExitResult(exit_code=None, signal=9)
    plugin.post_exit(job=job, result=result)  # must not raise although rmdir fails on a fake
    assert result.oom_killed is True


def test_plugin_without_pids_controller_refuses_to_start(tmp_path: Path) -> None:
    from worker_core import ConfigError

    root = make_tree(tmp_path / "cg")
    (root / PARENT / "cgroup.controllers").write_text("memory cpu\n")
    with pytest.raises(ConfigError, match="pids"):
        plugin_on(root)


def test_signal_job_ignores_unknown_jobs(tree: Path) -> None:
    plugin = plugin_on(tree)
    job = Job(id="nope", owner=None, spec=JobSpec(command="/bin/true"))
    assert plugin.signal_job(job=job, signum=signal.SIGTERM) is None


def test_held_helper_really_dies(tmp_path: Path) -> None:
    # Guard for the helper the fallback tests rely on.
    held = Held("import time; time.sleep(60)")
    try:
        os.kill(held.pid, signal.SIGKILL)
        assert wait_until(lambda: held.proc.poll() is not None)
        assert not alive(held.pid)
    finally:
        held.close()
