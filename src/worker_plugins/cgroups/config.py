"""The plugin's configuration section, ``[plugins.cgroups]``, and which subtree is this engine's."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import secrets
from pathlib import Path
from typing import Any

import attrs

MIB = 1 << 20

BACKENDS = ("auto", "v1", "v2")

#: Which v1 hierarchies a job cgroup is made in: those its limits need, or every one.
HIERARCHIES = ("needed", "all")

#: The largest ``pool_size`` accepted: more ready cgroups than this only wastes kernel memory.
MAX_POOL_SIZE = 256

#: Where every engine's own subtree is, unless ``parent`` names another: ``worker/<instance>``.
BASE = "worker"

#: Prefixes of derived instance names: from a state directory, or one run of an engine
#: without one (``run-<pid>-<random>``).
STATE_PREFIX, RUN_PREFIX = "state-", "run-"

_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _relative_path(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # The parent is joined under every hierarchy's root: an absolute path or ".." would
    # put job cgroups (and the startup cleanup, which kills what it finds) somewhere else.
    parts = value.split("/")
    if not value or value.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"{attribute.name} must be a relative path like 'worker', got {value!r}")
    if posixpath.normpath(value) != value:
        raise ValueError(f"{attribute.name} must be a normalized path, got {value!r}")


def _parent(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    _relative_path(instance, attribute, value)
    parts = value.split("/")
    # Start-up clean-up kills what it finds under the parent: one inside another engine's
    # subtree would be killed by that engine's.
    if parts[0] == BASE and len(parts) > 2:
        raise ValueError(
            f"parent {value!r} is inside the engine subtree {BASE}/{parts[1]}; use "
            f"{BASE}/NAME (or instance = 'NAME') or a parent outside {BASE}/"
        )


def _instance(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _INSTANCE.fullmatch(value):
        raise ValueError(
            f"{attribute.name} must be one name of letters, digits, '.', '_' and '-' "
            f"(not starting with '.' or '-'), got {value!r}"
        )


def _positive(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _pool_size(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POOL_SIZE:
        raise ValueError(
            f"{attribute.name} must be an integer from 0 (no pool) to {MAX_POOL_SIZE}, "
            f"got {value!r}"
        )


def _hierarchies(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in HIERARCHIES:
        raise ValueError(f"{attribute.name} must be one of {', '.join(HIERARCHIES)}, got {value!r}")


def _backend(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in BACKENDS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(BACKENDS)}, got {value!r}")


def _absolute(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"{attribute.name} must be an absolute path, got {value!r}")


@attrs.frozen
class CgroupsConfig:
    """Settings of the ``cgroups`` plugin.

    - ``instance``: this engine's own subtree is ``worker/<instance>``, and several engines
      on one host (a server, ``worker run``, library users) each have their own. Unset:
      ``state-<hash of the state directory>`` for an engine with a state directory (a
      restart finds its own leftovers again), else ``run-<pid>-<random>``, new for each
      run. Two engines with the same subtree are refused.
    - ``parent``: the subtree itself, instead of ``worker/<instance>`` (set one of the two).
      Job cgroups are ``<root>/<controller>/<parent>/<job id>`` (v1) or
      ``<root>/<parent>/<job id>`` (v2). Everything under it belongs to this engine:
      leftovers found there at startup are killed and removed.
    - ``default_pids_max``: the process limit of a job that sets none (a fork bomb is
      always contained).
    - ``root``: where the cgroup filesystems are mounted.
    - ``backend``: ``auto`` (v2 where the v2 hierarchy has the controllers), ``v1`` or ``v2``.
    - ``min_memory``: the smallest ``memory_max``/``memory_high`` accepted, in bytes; below
      it a job cannot even start an interpreter and the limit is surely a unit mistake.
    - ``pool_size``: how many fresh, never-used job cgroups are kept ready under the parent
      (named ``pool-<random>``, made in the background), so that starting a job renames one
      instead of creating it; 0 disables the pool. v1 only: cgroup v2 cannot rename a
      cgroup, and its job cgroup is a single directory anyway.
    - ``hierarchies``: which v1 hierarchies a job joins (each costs its start and end some
      work). ``needed``: pids and freezer, plus memory only with a memory limit, cpu and
      cpuacct only with a CPU limit (``cpu`` or ``cpu_weight``), blkio only with an IO
      limit; in the others the job stays in the engine's own cgroup, so limits set on
      ``parent`` itself there do not cover it. ``all``: every one, so that every job has a
      ``memory_peak`` and its cgroup's ``cpu_seconds``. A job outside the memory or cpuacct
      hierarchy has no ``memory_peak`` fact, its ``cpu_seconds`` fact is the engine's (the
      CPU time of its main process and the children it waited for), and its live usage is
      summed over its processes from /proc (resident memory, CPU time).
    """

    instance: str | None = attrs.field(default=None, validator=_instance)
    parent: str | None = attrs.field(default=None, validator=_parent)
    default_pids_max: int = attrs.field(default=4096, validator=_positive)
    root: str = attrs.field(default="/sys/fs/cgroup", validator=_absolute)
    backend: str = attrs.field(default="auto", validator=_backend)
    min_memory: int = attrs.field(default=4 * MIB, validator=_positive)
    pool_size: int = attrs.field(default=4, validator=_pool_size)
    hierarchies: str = attrs.field(default="needed", validator=_hierarchies)

    def __attrs_post_init__(self) -> None:
        if self.instance is not None and self.parent is not None:
            raise ValueError(f"set instance ({BASE}/<instance>) or parent (any subtree), not both")


def state_instance(state_dir: Path) -> str:
    """The instance name derived from a state directory: the same for every run on it."""
    digest = hashlib.sha256(os.fsencode(Path(os.path.abspath(state_dir)).resolve())).hexdigest()
    return f"{STATE_PREFIX}{digest[:12]}"


def run_instance() -> str:
    """An instance name for one run of an engine without a state directory, unique on the
    host: the pid says whose it is, the random part keeps two engines of one process apart
    and a reused pid from finding (and killing) a dead engine's leftovers as its own."""
    return f"{RUN_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


def engine_parent(config: CgroupsConfig, state_dir: Path | None) -> str:
    """This engine's own subtree: ``parent``, else ``worker/<instance>`` (derived if unset)."""
    if config.parent is not None:
        return config.parent
    if config.instance is not None:
        return f"{BASE}/{config.instance}"
    if state_dir is not None:
        return f"{BASE}/{state_instance(state_dir)}"
    return f"{BASE}/{run_instance()}"


def is_instance_name(name: str) -> bool:
    """Whether ``name`` is a derived instance's (``state-<hash>``, ``run-<pid>-<random>``)."""
    return (
        run_pid(name) is not None
        or re.fullmatch(rf"{STATE_PREFIX}[0-9a-f]{{12}}", name) is not None
    )


def run_pid(name: str) -> int | None:
    """The pid in a ``run-<pid>-<random>`` instance name, else None."""
    match = re.fullmatch(rf"{RUN_PREFIX}(\d+)-[0-9a-f]+", name)
    return int(match.group(1)) if match else None
