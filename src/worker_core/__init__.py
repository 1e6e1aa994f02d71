"""worker: a plugin-architected job worker for Linux.

The public API for library users and plugin authors::

    from worker_core import Engine, JobSpec, Limits, hookimpl
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from .config import Config, EngineSettings
from .errors import (
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
from .hookspecs import PROJECT_NAME
from .model import (
    Action,
    EndReason,
    ExitResult,
    IOLimit,
    Isolation,
    Job,
    JobSpec,
    JobState,
    Limits,
    Principal,
)
from .output import BOTH_STREAMS, Chunk, Follower, OutputStore, StartAt, StartPosition, Stream
from .plan import SpawnPlan
from .validation import DEFAULT_PATH

if TYPE_CHECKING:
    from .engine import AsyncEngine, Engine

#: Mark a plugin's hook implementations: ``@hookimpl def pre_spawn(job, plan): ...``
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


def __getattr__(name: str) -> object:
    # The engine pulls in threads and the launcher; import it only when asked for, so a plugin
    # importing ``hookimpl`` stays cheap.
    if name in {"Engine", "AsyncEngine"}:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)


__all__ = [
    "BOTH_STREAMS",
    "DEFAULT_PATH",
    "PROJECT_NAME",
    "Action",
    "AsyncEngine",
    "Chunk",
    "Config",
    "ConfigError",
    "EndReason",
    "Engine",
    "EngineClosed",
    "EngineSettings",
    "ExitResult",
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
    "Limits",
    "OutputStore",
    "PermissionDenied",
    "PluginError",
    "Principal",
    "ResourceExhausted",
    "SpawnPlan",
    "StartAt",
    "StartPosition",
    "Stream",
    "WorkerError",
    "hookimpl",
]
