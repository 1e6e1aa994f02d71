"""worker-rlimits: an example third-party plugin for ``worker`` that sets per-job rlimits.

Enable it with ``--plugins rlimits``; see :mod:`worker_rlimits.plugin` for the options and
the configuration it reads.
"""

from __future__ import annotations

from .plugin import RlimitsConfig, RlimitsPlugin
from .values import RESOURCES, UNLIMITED, Resource, Unit, parse_limit

__all__ = [
    "RESOURCES",
    "UNLIMITED",
    "Resource",
    "RlimitsConfig",
    "RlimitsPlugin",
    "Unit",
    "parse_limit",
]
