"""worker: a plugin-architected job worker for Linux.

This module is the contract for library users::

    from worker_core import Engine, JobSpec, Limits

    with Engine("cgroups,netns") as engine:
        job = engine.submit(JobSpec("make", ["-j4"], limits=Limits(memory_max=1 << 30)))

Plugin authors import from :mod:`worker_core.plugin`; their tests use
:mod:`worker_core.testing`. Every module whose name starts with ``_`` is private and may
change without notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import (
    AmbiguousJobId,
    ConfigError,
    EngineClosed,
    FailedPrecondition,
    IllegalTransition,
    InvalidSpec,
    JobNotFound,
    PermissionDenied,
    PluginError,
    ResourceExhausted,
    WorkerError,
)
from ._hookspecs import PROJECT_NAME, hookimpl
from ._model import (
    Dependency,
    DependencyKind,
    EndReason,
    IOLimit,
    Isolation,
    Job,
    JobSpec,
    JobState,
    Limits,
    Principal,
    QueueReason,
)
from ._output import BOTH_STREAMS, Follower, StartAt, StartPosition, Stream

if TYPE_CHECKING:
    from ._aio import AsyncEngine
    from ._config import Config, EngineSettings
    from ._engine import Engine
    from ._records import job_from_dict, job_to_dict
    from ._watch import JobWatcher

# Imported when first asked for: the configuration pulls in cattrs and the TOML reader, the
# engine threads and the launcher; `worker job get` needs neither (start-up time).
_LAZY = {
    "Config": "_config",
    "EngineSettings": "_config",
    "job_from_dict": "_records",
    "job_to_dict": "_records",
    "Engine": "_engine",
    "AsyncEngine": "_engine",
    "JobWatcher": "_engine",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'worker_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BOTH_STREAMS",
    "PROJECT_NAME",
    "AmbiguousJobId",
    "AsyncEngine",
    "Config",
    "ConfigError",
    "Dependency",
    "DependencyKind",
    "EndReason",
    "Engine",
    "EngineClosed",
    "EngineSettings",
    "FailedPrecondition",
    "Follower",
    "IOLimit",
    "IllegalTransition",
    "InvalidSpec",
    "Isolation",
    "Job",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobWatcher",
    "Limits",
    "PermissionDenied",
    "PluginError",
    "Principal",
    "QueueReason",
    "ResourceExhausted",
    "StartAt",
    "StartPosition",
    "Stream",
    "WorkerError",
    "hookimpl",
    "job_from_dict",
    "job_to_dict",
]
