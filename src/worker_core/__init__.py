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

if TYPE_CHECKING:
    from ._aio import AsyncEngine
    from ._config import Config, EngineSettings
    from ._engine import Engine
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
    from ._records import job_from_dict, job_to_dict
    from ._watch import JobWatcher

# Everything but the errors is imported when first asked for: the model and the output types
# are attrs classes, the hook marker is pluggy's, the configuration pulls in cattrs and the
# TOML reader, the engine its threads and the launcher. `worker job get` needs none of them,
# and attrs and pluggy alone would be a sixth of its start-up.
_LAZY = {
    "PROJECT_NAME": "_hookspecs",
    "hookimpl": "_hookspecs",
    **dict.fromkeys(
        (
            "Dependency",
            "DependencyKind",
            "EndReason",
            "IOLimit",
            "Isolation",
            "Job",
            "JobSpec",
            "JobState",
            "Limits",
            "Principal",
            "QueueReason",
        ),
        "_model",
    ),
    **dict.fromkeys(("BOTH_STREAMS", "Follower", "StartAt", "StartPosition", "Stream"), "_output"),
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


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
