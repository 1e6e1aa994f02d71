"""Unit tests of the pure parts: Limits translation, conversions, detection, configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker_core import Config, ConfigError, InvalidSpec, IOLimit, Limits
from worker_plugins.cgroups.config import CgroupsConfig
from worker_plugins.cgroups.detect import Layout, detect, parse_mounts
from worker_plugins.cgroups.limits import (
    Capabilities,
    Write,
    check_ranges,
    enforced_fields,
    resolve_device,
    v1_writes,
    v2_writes,
    weight_to_bfq,
    weight_to_blkio,
    weight_to_shares,
)

MIB = 1 << 20


def root_disk() -> tuple[str, str]:
    """A whole disk of this host as (path, MAJ:MIN), from /sys/block."""
    for name in sorted(os.listdir("/sys/block")):
        dev = Path("/dev") / name
        if dev.exists() and not name.startswith(("loop", "ram", "zram")):
            return str(dev), (Path("/sys/block") / name / "dev").read_text().strip()
    pytest.skip("no block device on this host")


V2_CAPS = Capabilities(
    controllers=frozenset({"cpu", "io", "memory", "pids"}),
    files={
        "memory": frozenset({"memory.max", "memory.high", "memory.swap.max"}),
        "cpu": frozenset({"cpu.max", "cpu.weight"}),
        "io": frozenset({"io.max", "io.weight"}),
        "pids": frozenset({"pids.max"}),
    },
)

V1_CAPS = Capabilities(
    controllers=frozenset({"cpu", "io", "memory", "pids", "cpuacct", "freezer"}),
    files={
        "memory": frozenset(
            {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes"}
        ),
        "cpu": frozenset({"cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"}),
        "io": frozenset(
            {
                "blkio.weight",
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_bps_device",
                "blkio.throttle.read_iops_device",
                "blkio.throttle.write_iops_device",
            }
        ),
        "pids": frozenset({"pids.max"}),
    },
)


def test_v2_writes_cover_every_limit() -> None:
    path, devno = root_disk()
    limits = Limits(
        memory_max=64 * MIB,
        memory_high=48 * MIB,
        cpu=0.5,
        cpu_weight=200,
        io_weight=300,
        io=(IOLimit(device=path, read_bps=1000, write_iops=7),),
        pids_max=32,
    )
    assert v2_writes(limits, V2_CAPS, 4096) == [
        Write("memory", "memory.max", str(64 * MIB)),
        Write("memory", "memory.swap.max", "0"),
        Write("memory", "memory.high", str(48 * MIB)),
        Write("cpu", "cpu.max", "50000 100000"),
        Write("cpu", "cpu.weight", "200"),
        Write("io", "io.weight", "default 300"),
        Write("io", "io.max", f"{devno} rbps=1000 wiops=7"),
        Write("pids", "pids.max", "32"),
    ]


def test_pids_max_is_always_written() -> None:
    assert v2_writes(Limits(), V2_CAPS, 4096) == [Write("pids", "pids.max", "4096")]
    assert v1_writes(Limits(), V1_CAPS, 77) == [Write("pids", "pids.max", "77")]


def test_v1_writes_cover_every_limit() -> None:
    _path, devno = root_disk()
    limits = Limits(
        memory_max=64 * MIB,
        memory_high=48 * MIB,
        cpu=1.5,
        cpu_weight=100,
        io_weight=100,
        io=(IOLimit(device=devno, read_bps=1000, write_bps=2000, read_iops=3, write_iops=4),),
    )
    assert v1_writes(limits, V1_CAPS, 4096) == [
        Write("memory", "memory.limit_in_bytes", str(64 * MIB)),
        Write("memory", "memory.memsw.limit_in_bytes", str(64 * MIB)),
        Write("memory", "memory.soft_limit_in_bytes", str(48 * MIB)),
        Write("cpu", "cpu.cfs_period_us", "100000"),
        Write("cpu", "cpu.cfs_quota_us", "150000"),
        Write("cpu", "cpu.shares", "1024"),
        Write("io", "blkio.weight", "500"),
        Write("io", "blkio.throttle.read_bps_device", f"{devno} 1000"),
        Write("io", "blkio.throttle.write_bps_device", f"{devno} 2000"),
        Write("io", "blkio.throttle.read_iops_device", f"{devno} 3"),
        Write("io", "blkio.throttle.write_iops_device", f"{devno} 4"),
        Write("pids", "pids.max", "4096"),
    ]


def test_io_weight_falls_back_to_bfq_then_refuses() -> None:
    bfq_v1 = Capabilities(
        V1_CAPS.controllers, {**V1_CAPS.files, "io": frozenset({"blkio.bfq.weight"})}
    )
    assert Write("io", "blkio.bfq.weight", "1000") in v1_writes(Limits(io_weight=5000), bfq_v1, 1)
    bfq_v2 = Capabilities(
        V2_CAPS.controllers, {**V2_CAPS.files, "io": frozenset({"io.bfq.weight"})}
    )
    assert Write("io", "io.bfq.weight", "default 250") in v2_writes(
        Limits(io_weight=250), bfq_v2, 1
    )
    neither = Capabilities(V1_CAPS.controllers, {**V1_CAPS.files, "io": frozenset()})
    with pytest.raises(InvalidSpec) as info:
        v1_writes(Limits(io_weight=100), neither, 1)
    assert info.value.field == "limits.io_weight"


def test_missing_swap_accounting_skips_the_swap_cap() -> None:
    no_swap = Capabilities(
        V2_CAPS.controllers, {**V2_CAPS.files, "memory": frozenset({"memory.max"})}
    )
    assert v2_writes(Limits(memory_max=8 * MIB), no_swap, 1)[:1] == [
        Write("memory", "memory.max", str(8 * MIB))
    ]
    assert all(
        w.file != "memory.swap.max" for w in v2_writes(Limits(memory_max=8 * MIB), no_swap, 1)
    )


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(memory_max=64 * MIB), "limits.memory_max"),
        (Limits(cpu=0.5), "limits.cpu"),
        (Limits(cpu_weight=5), "limits.cpu_weight"),
        (Limits(io_weight=5), "limits.io_weight"),
    ],
)
def test_absent_controller_is_refused_naming_the_field(limits: Limits, field: str) -> None:
    only_pids = Capabilities(frozenset({"pids"}), {"pids": frozenset({"pids.max"})})
    for translate in (v1_writes, v2_writes):
        with pytest.raises(InvalidSpec) as info:
            translate(limits, only_pids, 1)
        assert info.value.field == field
        assert "no " in info.value.problem


def test_enforced_fields_follow_the_controllers() -> None:
    assert enforced_fields(V2_CAPS) == [
        "limits.memory_max",
        "limits.memory_high",
        "limits.cpu",
        "limits.cpu_weight",
        "limits.io_weight",
        "limits.io",
        "limits.pids_max",
    ]
    assert enforced_fields(Capabilities(frozenset({"pids"}), {})) == ["limits.pids_max"]


def test_weight_conversions_keep_defaults_and_clamp() -> None:
    assert weight_to_shares(100) == 1024
    assert weight_to_shares(1) == 10
    assert weight_to_shares(10000) == 102400
    assert weight_to_blkio(100) == 500
    assert weight_to_blkio(1) == 10
    assert weight_to_blkio(10000) == 1000
    assert weight_to_bfq(100) == 100
    assert weight_to_bfq(10000) == 1000


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(memory_max=MIB), "limits.memory_max"),
        (Limits(memory_high=4 * MIB - 1), "limits.memory_high"),
        (Limits(cpu=float((os.cpu_count() or 1) + 1)), "limits.cpu"),
        (Limits(cpu=0.001), "limits.cpu"),
        (Limits(pids_max=10**9), "limits.pids_max"),
        (Limits(io=(IOLimit(device="/dev/does-not-exist", read_bps=1),)), "limits.io"),
        (Limits(io=(IOLimit(device="4095:4095", read_bps=1),)), "limits.io"),
        (Limits(io=(IOLimit(device="sda", read_bps=1),)), "limits.io"),
        (Limits(io=(IOLimit(device="/dev/null", read_bps=1),)), "limits.io"),
    ],
)
def test_check_ranges_refuses(limits: Limits, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        check_ranges(limits, min_memory=4 * MIB, cpu_count=os.cpu_count() or 1)
    assert info.value.field == field


def test_check_ranges_refuses_a_device_listed_twice() -> None:
    path, devno = root_disk()
    limits = Limits(
        io=(
            IOLimit(device=path, read_bps=1),
            IOLimit(device=devno, write_bps=1),
        )
    )
    with pytest.raises(InvalidSpec, match="twice"):
        check_ranges(limits, min_memory=1, cpu_count=1)


def test_check_ranges_accepts_sane_limits() -> None:
    path, _ = root_disk()
    limits = Limits(memory_max=4 * MIB, cpu=0.01, io=(IOLimit(device=path, read_bps=1),))
    check_ranges(limits, min_memory=4 * MIB, cpu_count=os.cpu_count() or 1)


def test_resolve_device_accepts_path_and_number() -> None:
    path, devno = root_disk()
    assert resolve_device(path) == devno
    assert resolve_device(devno) == devno


def test_resolve_device_refuses_a_partition(tmp_path: Path) -> None:
    (tmp_path / "8:1").mkdir()
    (tmp_path / "8:1" / "partition").write_text("1\n")
    with pytest.raises(InvalidSpec, match="partition"):
        resolve_device("8:1", sys_block=tmp_path)


# ------------------------------------------------------------------------- detection

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""

LEGACY_COMOUNTED = """\
cgroup /c/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0
cgroup /c/memory cgroup rw,memory 0 0
cgroup /c/with\\040space cgroup rw,freezer 0 0
cgroup /elsewhere/blkio cgroup rw,blkio 0 0
"""


def test_detect_hybrid_chooses_v1(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(HYBRID)
    host = detect(Path("/sys/fs/cgroup"), mounts)
    assert host.layout is Layout.HYBRID
    assert host.v2_mount == Path("/sys/fs/cgroup/unified")
    assert host.v1_mounts["memory"] == Path("/sys/fs/cgroup/memory")
    assert "name=systemd" not in host.v1_mounts
    assert host.choose() == "v1"


def test_detect_legacy_with_comounted_controllers(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(LEGACY_COMOUNTED)
    host = detect(Path("/c"), mounts)
    assert host.layout is Layout.LEGACY
    assert host.v1_mounts["cpu"] == host.v1_mounts["cpuacct"] == Path("/c/cpu,cpuacct")
    assert host.v1_mounts["freezer"] == Path("/c/with space")
    assert "blkio" not in host.v1_mounts  # mounted outside the configured root
    assert host.choose() == "v1"
    with pytest.raises(ConfigError):
        host.choose("v2")


def test_detect_unified_chooses_v2(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {tmp_path} cgroup2 rw,nsdelegate 0 0\n")
    host = detect(tmp_path, mounts)
    assert host.layout is Layout.UNIFIED
    assert host.v2_controllers >= {"memory", "pids", "io", "cpu"}
    assert host.choose() == "v2"
    with pytest.raises(ConfigError):
        host.choose("v1")


def test_detect_unmounted_cgroup2_tree_is_unified(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    host = detect(tmp_path, tmp_path / "no-mounts-file")
    assert host.layout is Layout.UNIFIED
    assert host.choose() == "v2"


def test_detect_nothing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no cgroup filesystem"):
        detect(tmp_path, tmp_path / "none")


def test_detect_this_host() -> None:
    host = detect()
    if host.v2_mount is not None and {"memory", "pids"} <= host.v2_controllers:
        assert host.choose() == "v2"
    else:
        assert host.choose() == "v1"


def test_parse_mounts_ignores_other_filesystems() -> None:
    assert parse_mounts("proc /proc proc rw 0 0\n") == []


# ------------------------------------------------------------------------- configuration


def test_config_defaults_and_overrides() -> None:
    assert Config().section("cgroups", CgroupsConfig) == CgroupsConfig()
    assert CgroupsConfig().default_pids_max == 4096
    assert CgroupsConfig().min_memory == 4 * MIB
    config = Config.from_mapping({"plugins": {"cgroups": {"parent": "a/b", "backend": "v2"}}})
    assert config.section("cgroups", CgroupsConfig).parent == "a/b"


@pytest.mark.parametrize(
    "section",
    [
        {"parent": "/abs"},
        {"parent": "../escape"},
        {"parent": ""},
        {"parent": "a//b"},
        {"backend": "v3"},
        {"default_pids_max": 0},
        {"root": "relative"},
        {"unknown": 1},
    ],
)
def test_config_errors_name_the_section(section: dict[str, object]) -> None:
    config = Config.from_mapping({"plugins": {"cgroups": section}})
    with pytest.raises(ConfigError, match=r"plugins\.cgroups"):
        config.section("cgroups", CgroupsConfig)
