"""The cgroup v1 backend on this host's real hierarchies (root required).

Processes are placed into a job cgroup by a test-only helper (:class:`Held`) because a
backend test has no launcher; the engine tests cover the real join-before-exec path.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import DAEMONIZE, Held, v1_mounts
from helpers import alive, wait_until

from worker_core import Config, InvalidSpec, IOLimit, Limits
from worker_plugins.cgroups.fs import CgroupError
from worker_plugins.cgroups.names import is_pool_name
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.v1 import V1Backend

MIB = 1 << 20


@pytest.fixture
def backend(parent: str) -> Iterator[V1Backend]:
    b = V1Backend(v1_mounts(), parent, default_pids_max=4096)
    yield b
    for job_id in b.leftovers():
        b.remove(job_id)
    b.remove_parents()


def held_in(backend: V1Backend, job_id: str, code: str, limits: Limits | None = None) -> Held:
    procs = backend.create(job_id, limits or Limits())
    return Held(code).join(procs).release()


def cgroup_file(backend: V1Backend, controller: str, job_id: str, name: str) -> str:
    return (backend._dir(controller, job_id) / name).read_text().strip()


def require(backend: V1Backend, *controllers: str) -> None:
    missing = [c for c in controllers if c not in backend._mounts]
    if missing:
        pytest.skip(f"this host has no v1 {', '.join(missing)} controller")


def test_create_writes_limits_the_kernel_reads_back(backend: V1Backend) -> None:
    require(backend, "memory", "cpu", "pids", "blkio")
    disk = Path("/sys/block/vda/dev")
    io = (
        [IOLimit(device=disk.read_text().strip(), read_bps=1 << 20, write_iops=50)]
        if disk.exists()
        else []
    )
    limits = Limits(
        memory_max=64 * MIB,
        memory_high=32 * MIB,
        cpu=0.5,
        cpu_weight=200,
        io_weight=300,
        io=io,
        pids_max=32,
    )
    procs = backend.create("job1", limits)
    assert sorted(procs) == sorted(str(d / "cgroup.procs") for d in backend.job_dirs("job1"))
    assert all(Path(p).exists() for p in procs)
    assert cgroup_file(backend, "memory", "job1", "memory.limit_in_bytes") == str(64 * MIB)
    if (backend._dir("memory", "job1") / "memory.memsw.limit_in_bytes").exists():
        assert cgroup_file(backend, "memory", "job1", "memory.memsw.limit_in_bytes") == str(
            64 * MIB
        )
    assert cgroup_file(backend, "memory", "job1", "memory.soft_limit_in_bytes") == str(32 * MIB)
    assert cgroup_file(backend, "cpu", "job1", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(backend, "cpu", "job1", "cpu.cfs_period_us") == "100000"
    assert cgroup_file(backend, "cpu", "job1", "cpu.shares") == "2048"
    assert cgroup_file(backend, "pids", "job1", "pids.max") == "32"
    weight_file = (
        "blkio.weight"
        if (backend._dir("io", "job1") / "blkio.weight").exists()
        else "blkio.bfq.weight"
    )
    weight = cgroup_file(backend, "io", "job1", weight_file)
    assert weight.split()[-1] == ("1000" if weight_file == "blkio.weight" else "300")
    if io:
        devno = io[0].device
        assert (
            cgroup_file(backend, "io", "job1", "blkio.throttle.read_bps_device")
            == f"{devno} {1 << 20}"
        )
        assert (
            cgroup_file(backend, "io", "job1", "blkio.throttle.write_iops_device") == f"{devno} 50"
        )
    assert backend.remove("job1")
    assert not backend.exists("job1")


def test_a_refused_write_leaves_nothing(backend: V1Backend) -> None:
    """The kernel refuses a child's CFS quota above its parent's: creation rolls back."""
    require(backend, "cpu")
    backend.prepare()
    quota = backend._dir("cpu") / "cpu.cfs_quota_us"
    quota.write_text("50000")
    try:
        with pytest.raises(CgroupError, match=r"cpu\.cfs_quota_us"):
            backend.create("job1", Limits(cpu=1.0))
        assert not backend.exists("job1")
    finally:
        quota.write_text("-1")


def test_process_joins_and_is_listed(backend: V1Backend) -> None:
    held = held_in(backend, "job1", "import time; time.sleep(60)")
    try:
        assert backend.procs("job1") == [held.pid]
        for line in Path(f"/proc/{held.pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if set(controllers.split(",")) & set(backend._mounts):
                assert path == f"/{backend.parent}/job1"
    finally:
        held.close()
    assert backend.remove("job1")


def test_sigterm_reaches_the_process_through_the_freezer(backend: V1Backend) -> None:
    require(backend, "freezer")
    held = held_in(backend, "job1", "import time; time.sleep(60)")
    try:
        backend.kill("job1", signal.SIGTERM)
        assert held.proc.wait(timeout=5) == -signal.SIGTERM
        assert cgroup_file(backend, "freezer", "job1", "freezer.state") == "THAWED"
    finally:
        held.close()
    assert backend.remove("job1")


def test_sigkill_reaches_a_setsid_grandchild(backend: V1Backend) -> None:
    require(backend, "freezer")
    held = held_in(backend, "job1", DAEMONIZE + "\nimport time; time.sleep(60)")
    try:
        grandchild = int(held.readline())
        assert alive(grandchild)
        assert os.getsid(grandchild) != os.getsid(held.pid)  # it escaped the session
        assert sorted(backend.procs("job1")) == sorted([held.pid, grandchild])
        backend.kill("job1", signal.SIGKILL)
        assert held.proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_until(lambda: not alive(grandchild))
        assert wait_until(lambda: not backend.procs("job1"))
    finally:
        held.close()
    assert backend.remove("job1")


def test_kill_contains_a_fork_bomb(backend: V1Backend) -> None:
    require(backend, "freezer", "pids")
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    held = held_in(backend, "job1", bomb, Limits(pids_max=16))
    try:
        events = backend._dir("pids", "job1") / "pids.events"
        assert wait_until(lambda: int(events.read_text().split()[1]) > 0), "pids.max never hit"
        assert int(cgroup_file(backend, "pids", "job1", "pids.current")) <= 16
        backend.kill("job1", signal.SIGKILL)
        assert wait_until(lambda: not backend.procs("job1"))
    finally:
        held.close()
    assert backend.remove("job1")


def test_memory_limit_oom_kills_and_is_reported(backend: V1Backend) -> None:
    require(backend, "memory")
    held = held_in(backend, "job1", "x = b'a' * (128 << 20)", Limits(memory_max=32 * MIB))
    try:
        assert held.proc.wait(timeout=20) == -signal.SIGKILL
    finally:
        held.close()
    stats = backend.stats("job1")
    assert stats.oom_killed is True
    assert stats.memory_peak is not None and stats.memory_peak <= 32 * MIB
    assert backend.remove("job1")


def test_stats_of_a_clean_exit(backend: V1Backend) -> None:
    require(backend, "memory", "cpuacct")
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    held = held_in(backend, "job1", code)
    try:
        assert held.proc.wait(timeout=20) == 0
    finally:
        held.close()
    stats = backend.stats("job1")
    assert stats.oom_killed is False
    assert stats.cpu_seconds is not None and 0.3 <= stats.cpu_seconds < 2.0
    assert stats.memory_peak is not None and stats.memory_peak > 0
    assert backend.remove("job1")


def test_remove_kills_what_is_left_then_removes(backend: V1Backend) -> None:
    held = held_in(backend, "job1", "import time; time.sleep(60)")
    try:
        assert backend.remove("job1")
        assert held.proc.wait(timeout=5) == -signal.SIGKILL
        assert not backend.exists("job1")
    finally:
        held.close()


def test_remove_of_a_sub_cgroup_a_root_job_made(backend: V1Backend) -> None:
    backend.create("job1", Limits())
    for job_dir in backend.job_dirs("job1"):
        (job_dir / "nested").mkdir()
    assert backend.remove("job1")
    assert not backend.exists("job1")


def test_absent_controller_is_refused(parent: str) -> None:
    mounts = {c: p for c, p in v1_mounts().items() if c not in {"blkio"}}
    b = V1Backend(mounts, parent, 4096)
    try:
        with pytest.raises(InvalidSpec) as info:
            b.check(Limits(io_weight=100))
        assert info.value.field == "limits.io_weight"
        assert not b.leftovers()
    finally:
        b.remove_parents()


def test_startup_cleans_leftovers_of_a_crashed_run(
    parent: str, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = v1_mounts()
    # A crashed run: job cgroups made by hand, one with a daemonized process inside.
    held = Held(DAEMONIZE + "\nimport time; time.sleep(60)")
    try:
        for mount in dict.fromkeys(mounts.values()):
            (mount / parent / "deadbeef").mkdir(parents=True)
            (mount / parent / "cafe0001").mkdir(parents=True)
        held.join(
            [
                str(mount / parent / "deadbeef" / "cgroup.procs")
                for mount in dict.fromkeys(mounts.values())
            ]
        )
        held.release()
        grandchild = int(held.readline())
        plugin = CgroupsPlugin()
        plugin.configure(
            engine=object(),
            config=Config.from_mapping({"plugins": {"cgroups": {"parent": parent}}}),
        )
        with caplog.at_level(logging.WARNING, logger="worker.cgroups"):
            plugin.startup(engine=object())
        assert held.proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_until(lambda: not alive(grandchild))
        lines = [r.getMessage() for r in caplog.records if r.name == "worker.cgroups"]
        assert any("deadbeef" in line and "2 processes killed" in line for line in lines), lines
        assert any("cafe0001" in line for line in lines), lines
        assert len(lines) == 2
        for mount in mounts.values():
            # No job cgroup is left; the plugin's own ready cgroups (pool-*) may be there.
            assert not any(
                p.is_dir() and not is_pool_name(p.name) for p in (mount / parent).iterdir()
            )
        plugin.shutdown(engine=object())
    finally:
        held.close()


def test_shutdown_keeps_a_parent_it_did_not_create(parent: str) -> None:
    mounts = v1_mounts()
    memory = mounts.get("memory")
    if memory is None:
        pytest.skip("no v1 memory controller")
    (memory / parent).mkdir()  # an admin's parent, perhaps with limits of its own
    b = V1Backend(mounts, parent, 4096)
    b.prepare()
    b.remove_parents()
    assert (memory / parent).is_dir()
    assert not any((m / parent).exists() for c, m in mounts.items() if m != memory)
