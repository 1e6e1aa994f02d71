"""Which cgroup layout the host has, and so which backend to use.

- *unified*: cgroup2 mounted at the root, controllers listed in its ``cgroup.controllers``.
- *hybrid*: controllers on v1 hierarchies, plus a cgroup2 mount (``unified``) with none.
- *legacy*: v1 hierarchies only.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from worker_core.plugin import ConfigError

#: v1 controllers a job cgroup joins (when the host has them).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "blkio", "pids", "freezer")

#: The v2 controllers without which the v2 hierarchy is not the one holding the limits.
V2_ESSENTIAL = frozenset({"memory", "pids"})


class Layout(enum.Enum):
    UNIFIED = "unified"
    HYBRID = "hybrid"
    LEGACY = "legacy"


@attrs.frozen
class HostCgroups:
    """The host's cgroup mounts under the configured root."""

    layout: Layout
    v2_mount: Path | None
    v2_controllers: frozenset[str]
    v1_mounts: Mapping[str, Path]  # controller -> mount point (co-mounted ones share one)

    def choose(self, wanted: str = "auto") -> str:
        """``"v1"`` or ``"v2"``: v2 where the v2 hierarchy has the controllers, v1 otherwise."""
        if wanted == "v2":
            if self.v2_mount is None:
                raise ConfigError(
                    "plugins.cgroups.backend: v2 requested but no cgroup2 filesystem is mounted"
                )
            return "v2"
        if wanted == "v1":
            if not self.v1_mounts:
                raise ConfigError(
                    "plugins.cgroups.backend: v1 requested but no v1 hierarchy is mounted"
                )
            return "v1"
        if self.v2_mount is not None and (
            self.v2_controllers >= V2_ESSENTIAL or not self.v1_mounts
        ):
            return "v2"
        return "v1"


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in paths as \040-style octal.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[tuple[str, Path, frozenset[str]]]:
    """``(fstype, mount point, options)`` for every cgroup/cgroup2 line of a mounts file."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in {"cgroup", "cgroup2"}:
            found.append((fields[2], Path(_unescape(fields[1])), frozenset(fields[3].split(","))))
    return found


def detect(
    root: Path = Path("/sys/fs/cgroup"), mounts_file: Path = Path("/proc/self/mounts")
) -> HostCgroups:
    """Inspect the mounts under ``root``; raises :class:`ConfigError` if there are none."""
    try:
        mounts = parse_mounts(mounts_file.read_text())
    except OSError:
        mounts = []

    def under_root(path: Path) -> bool:
        return path == root or root in path.parents

    v1: dict[str, Path] = {}
    v2_mount: Path | None = None
    for fstype, point, options in mounts:
        if not under_root(point):
            continue
        if fstype == "cgroup2":
            # Prefer a cgroup2 mount at the root itself (unified) to one beside v1 (hybrid).
            if v2_mount is None or point == root:
                v2_mount = point
        else:
            for controller in V1_CONTROLLERS:
                if controller in options:
                    v1.setdefault(controller, point)
    if v2_mount is None and not v1 and (root / "cgroup.controllers").is_file():
        # A cgroup2-shaped tree not listed in this mount namespace's table (a bind mount, or
        # a test's fake tree): treat it as unified.
        v2_mount = root
    if v2_mount is None and not v1:
        raise ConfigError(f"plugins.cgroups.root: no cgroup filesystem is mounted under {root}")

    controllers: frozenset[str] = frozenset()
    if v2_mount is not None:
        try:
            controllers = frozenset((v2_mount / "cgroup.controllers").read_text().split())
        except OSError:
            controllers = frozenset()
    layout = (Layout.HYBRID if v2_mount is not None else Layout.LEGACY) if v1 else Layout.UNIFIED
    return HostCgroups(layout=layout, v2_mount=v2_mount, v2_controllers=controllers, v1_mounts=v1)
