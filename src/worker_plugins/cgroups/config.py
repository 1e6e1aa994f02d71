"""The plugin's configuration section, ``[plugins.cgroups]``."""

from __future__ import annotations

import posixpath
from typing import Any

import attrs

MIB = 1 << 20

BACKENDS = ("auto", "v1", "v2")


def _relative_path(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # The parent is joined under every hierarchy's root: an absolute path or ".." would
    # put job cgroups (and the startup cleanup, which kills what it finds) somewhere else.
    parts = value.split("/")
    if not value or value.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"{attribute.name} must be a relative path like 'worker', got {value!r}")
    if posixpath.normpath(value) != value:
        raise ValueError(f"{attribute.name} must be a normalized path, got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _backend(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in BACKENDS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(BACKENDS)}, got {value!r}")


def _absolute(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"{attribute.name} must be an absolute path, got {value!r}")


@attrs.frozen
class CgroupsConfig:
    """Settings of the ``cgroups`` plugin.

    - ``parent``: job cgroups are ``<root>/<controller>/<parent>/<job id>`` (v1) or
      ``<root>/<parent>/<job id>`` (v2). Everything under it belongs to the worker: leftovers
      found there at startup are killed and removed.
    - ``default_pids_max``: the process limit of a job that sets none (a fork bomb is
      always contained).
    - ``root``: where the cgroup filesystems are mounted.
    - ``backend``: ``auto`` (v2 where the v2 hierarchy has the controllers), ``v1`` or ``v2``.
    - ``min_memory``: the smallest ``memory_max``/``memory_high`` accepted, in bytes; below
      it a job cannot even start an interpreter and the limit is surely a unit mistake.
    """

    parent: str = attrs.field(default="worker", validator=_relative_path)
    default_pids_max: int = attrs.field(default=4096, validator=_positive)
    root: str = attrs.field(default="/sys/fs/cgroup", validator=_absolute)
    backend: str = attrs.field(default="auto", validator=_backend)
    min_memory: int = attrs.field(default=4 * MIB, validator=_positive)
