"""Translate :class:`~worker_core.Limits` into cgroup interface-file writes.

Pure functions: given what the host offers (:class:`Capabilities`), they return the writes
a job cgroup needs, or raise :class:`~worker_core.InvalidSpec` naming the field the
host cannot honour. The same functions serve ``validate_spec`` (writes discarded, nothing
created) and ``pre_spawn`` (writes applied), so a spec that validates is one that applies.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import attrs

from worker_core.plugin import InvalidSpec, IOLimit, Limits

#: CFS period used for ``cpu`` limits: 100 ms, the kernel's default.
CPU_PERIOD_US = 100_000
#: The kernel refuses a CFS quota below 1 ms.
MIN_CPU_QUOTA_US = 1_000

#: The kernel's PID_MAX_LIMIT: pids.max refuses anything larger.
PID_MAX_LIMIT = 4 * 1024 * 1024

#: Every field this plugin can enforce, when the host has the controller behind it.
FIELD_CONTROLLER: Mapping[str, str] = {
    "limits.memory_max": "memory",
    "limits.memory_high": "memory",
    "limits.cpu": "cpu",
    "limits.cpu_weight": "cpu",
    "limits.io_weight": "io",
    "limits.io": "io",
    "limits.pids_max": "pids",
}

# cgroup v2 weights are 1..10000 around a default of 100; v1 knobs use other scales. The
# conversions keep the default on the default (as systemd's do) and clamp to the v1 range.
V1_SHARES_MIN, V1_SHARES_MAX, V1_SHARES_DEFAULT = 2, 262_144, 1024
V1_BLKIO_MIN, V1_BLKIO_MAX, V1_BLKIO_DEFAULT = 10, 1000, 500
BFQ_MIN, BFQ_MAX = 1, 1000  # blkio.bfq.weight / io.bfq.weight; default 100 like v2


@attrs.frozen
class Write:
    """One value for one interface file of a job cgroup, under ``controller``'s hierarchy."""

    controller: str
    file: str
    value: str


@attrs.frozen
class Capabilities:
    """What a new job cgroup will offer: its controllers and their interface files.

    ``files`` maps a controller to the names of its files (``"memory"`` ->
    ``{"memory.max", "memory.swap.max", ...}``). The io controller is called ``io`` here on
    both versions (v1 names it ``blkio``).
    """

    controllers: frozenset[str]
    files: Mapping[str, frozenset[str]]

    def has(self, controller: str, file: str) -> bool:
        return controller in self.controllers and file in self.files.get(controller, frozenset())


def enforced_fields(caps: Capabilities) -> list[str]:
    """The ``limits.*`` fields this host can enforce (what ``validate_spec`` claims)."""
    return [field for field, ctrl in FIELD_CONTROLLER.items() if ctrl in caps.controllers]


# -------------------------------------------------------------------------------------------
# host-independent checks
# -------------------------------------------------------------------------------------------


def check_ranges(limits: Limits, *, min_memory: int, cpu_count: int) -> None:
    """Refuse values no host could sensibly honour, whatever its cgroup layout."""
    for name in ("memory_max", "memory_high"):
        value = getattr(limits, name)
        if value is not None and value < min_memory:
            raise InvalidSpec(f"limits.{name}", f"must be at least {min_memory} bytes, got {value}")
    if limits.cpu is not None:
        if limits.cpu > cpu_count:
            raise InvalidSpec(
                "limits.cpu", f"this host has {cpu_count} cpus, asked for {limits.cpu}"
            )
        if cpu_quota_us(limits.cpu) < MIN_CPU_QUOTA_US:
            smallest = MIN_CPU_QUOTA_US / CPU_PERIOD_US
            raise InvalidSpec("limits.cpu", f"must be at least {smallest}, got {limits.cpu}")
    if limits.pids_max is not None and limits.pids_max > PID_MAX_LIMIT:
        raise InvalidSpec(
            "limits.pids_max", f"must be at most {PID_MAX_LIMIT}, got {limits.pids_max}"
        )
    seen: set[str] = set()
    for io in limits.io:
        devno = resolve_device(io.device)
        if devno in seen:
            raise InvalidSpec("limits.io", f"device {io.device} ({devno}) is listed twice")
        seen.add(devno)


def cpu_quota_us(cpu: float) -> int:
    return round(cpu * CPU_PERIOD_US)


def resolve_device(device: str, sys_block: Path = Path("/sys/dev/block")) -> str:
    """``/dev/vda`` or ``254:0`` as ``MAJ:MIN`` of an existing whole disk; else InvalidSpec."""
    if device.startswith("/"):
        try:
            st = os.stat(device)
        except OSError as exc:
            raise InvalidSpec("limits.io", f"device {device}: {exc.strerror or exc}") from exc
        if not stat.S_ISBLK(st.st_mode):
            raise InvalidSpec("limits.io", f"{device} is not a block device")
        devno = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    else:
        major, sep, minor = device.partition(":")
        if not (sep and major.isdigit() and minor.isdigit()):
            raise InvalidSpec("limits.io", f"device must be a path or MAJ:MIN, got {device!r}")
        devno = f"{int(major)}:{int(minor)}"
    node = sys_block / devno
    if not node.exists():
        raise InvalidSpec("limits.io", f"no block device {devno} ({device}) on this host")
    # The kernel's IO throttling only takes whole disks; a partition's line would be refused
    # at spawn time with a bare ENODEV.
    if (node / "partition").exists():
        raise InvalidSpec(
            "limits.io", f"{device} ({devno}) is a partition; IO limits apply to whole disks"
        )
    return devno


# -------------------------------------------------------------------------------------------
# conversions between v2 weights and v1 knobs
# -------------------------------------------------------------------------------------------


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def weight_to_shares(weight: int) -> int:
    """cgroup v2 ``cpu.weight`` (1..10000, default 100) to v1 ``cpu.shares`` (default 1024)."""
    return _clamp(weight * V1_SHARES_DEFAULT // 100, V1_SHARES_MIN, V1_SHARES_MAX)


def weight_to_blkio(weight: int) -> int:
    """cgroup v2 ``io.weight`` (default 100) to v1 CFQ ``blkio.weight`` (10..1000, default 500)."""
    return _clamp(weight * V1_BLKIO_DEFAULT // 100, V1_BLKIO_MIN, V1_BLKIO_MAX)


def weight_to_bfq(weight: int) -> int:
    """cgroup v2 ``io.weight`` to a BFQ weight: same default (100), range 1..1000."""
    return _clamp(weight, BFQ_MIN, BFQ_MAX)


# -------------------------------------------------------------------------------------------
# the two translations
# -------------------------------------------------------------------------------------------


def _require(caps: Capabilities, controller: str, file: str, field: str) -> None:
    if controller not in caps.controllers:
        raise InvalidSpec(field, f"this host has no {controller} controller for job cgroups")
    if not caps.has(controller, file):
        raise InvalidSpec(field, f"this host's {controller} controller has no {file}")


def _pids_max(limits: Limits, default_pids_max: int) -> int:
    # Always set: without it one fork bomb exhausts the host's pid space.
    return limits.pids_max if limits.pids_max is not None else default_pids_max


def v2_writes(limits: Limits, caps: Capabilities, default_pids_max: int) -> list[Write]:
    """The writes for a cgroup v2 job cgroup (files relative to it)."""
    writes: list[Write] = []

    def put(controller: str, file: str, value: str, field: str) -> None:
        _require(caps, controller, file, field)
        writes.append(Write(controller, file, value))

    if limits.memory_max is not None:
        put("memory", "memory.max", str(limits.memory_max), "limits.memory_max")
        # Without swap.max a job at its limit swaps instead of being OOM-killed; the file is
        # absent when the kernel does no swap accounting, and then there is nothing to cap.
        if caps.has("memory", "memory.swap.max"):
            writes.append(Write("memory", "memory.swap.max", "0"))
    if limits.memory_high is not None:
        put("memory", "memory.high", str(limits.memory_high), "limits.memory_high")
    # An OOM kill takes the whole job rather than one of its processes (a build with one
    # compiler killed would go on, broken): what Kubernetes does for containers on v2.
    if caps.has("memory", "memory.oom.group"):
        writes.append(Write("memory", "memory.oom.group", "1"))
    if limits.cpu is not None:
        put("cpu", "cpu.max", f"{cpu_quota_us(limits.cpu)} {CPU_PERIOD_US}", "limits.cpu")
    if limits.cpu_weight is not None:
        put("cpu", "cpu.weight", str(limits.cpu_weight), "limits.cpu_weight")
    if limits.io_weight is not None:
        if caps.has("io", "io.weight"):
            writes.append(Write("io", "io.weight", f"default {limits.io_weight}"))
        elif caps.has("io", "io.bfq.weight"):
            writes.append(
                Write("io", "io.bfq.weight", f"default {weight_to_bfq(limits.io_weight)}")
            )
        else:
            _require(caps, "io", "io.weight", "limits.io_weight")
    for io in limits.io:
        line = _io_max_line(io)
        if line is not None:
            put("io", "io.max", line, "limits.io")
    put("pids", "pids.max", str(_pids_max(limits, default_pids_max)), "limits.pids_max")
    return writes


def _io_max_line(io: IOLimit) -> str | None:
    keys = {
        "rbps": io.read_bps,
        "wbps": io.write_bps,
        "riops": io.read_iops,
        "wiops": io.write_iops,
    }
    caps = " ".join(f"{k}={v}" for k, v in keys.items() if v is not None)
    return f"{resolve_device(io.device)} {caps}" if caps else None


#: v1 throttle files for each IOLimit field.
V1_THROTTLE_FILES: Mapping[str, str] = {
    "read_bps": "blkio.throttle.read_bps_device",
    "write_bps": "blkio.throttle.write_bps_device",
    "read_iops": "blkio.throttle.read_iops_device",
    "write_iops": "blkio.throttle.write_iops_device",
}


def v1_writes(limits: Limits, caps: Capabilities, default_pids_max: int) -> list[Write]:
    """The writes for cgroup v1 job cgroups; ``controller`` names the hierarchy.

    ``memory_high`` becomes ``memory.soft_limit_in_bytes``, v1's nearest knob: a reclaim
    target under memory pressure rather than v2's throttling threshold.
    """
    writes: list[Write] = []

    def put(controller: str, file: str, value: str, field: str) -> None:
        _require(caps, controller, file, field)
        writes.append(Write(controller, file, value))

    if limits.memory_max is not None:
        put("memory", "memory.limit_in_bytes", str(limits.memory_max), "limits.memory_max")
        # memsw caps memory+swap, so equal to the memory limit means no swap. It must come
        # after limit_in_bytes: the kernel refuses memsw below the memory limit.
        if caps.has("memory", "memory.memsw.limit_in_bytes"):
            writes.append(Write("memory", "memory.memsw.limit_in_bytes", str(limits.memory_max)))
    if limits.memory_high is not None:
        put("memory", "memory.soft_limit_in_bytes", str(limits.memory_high), "limits.memory_high")
    if limits.cpu is not None:
        put("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US), "limits.cpu")
        put("cpu", "cpu.cfs_quota_us", str(cpu_quota_us(limits.cpu)), "limits.cpu")
    if limits.cpu_weight is not None:
        put("cpu", "cpu.shares", str(weight_to_shares(limits.cpu_weight)), "limits.cpu_weight")
    if limits.io_weight is not None:
        if caps.has("io", "blkio.weight"):
            writes.append(Write("io", "blkio.weight", str(weight_to_blkio(limits.io_weight))))
        elif caps.has("io", "blkio.bfq.weight"):
            writes.append(Write("io", "blkio.bfq.weight", str(weight_to_bfq(limits.io_weight))))
        else:
            _require(caps, "io", "blkio.weight", "limits.io_weight")
    for io in limits.io:
        devno = resolve_device(io.device)
        for name, file in V1_THROTTLE_FILES.items():
            value = getattr(io, name)
            if value is not None:
                put("io", file, f"{devno} {value}", "limits.io")
    put("pids", "pids.max", str(_pids_max(limits, default_pids_max)), "limits.pids_max")
    return writes
