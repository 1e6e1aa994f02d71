"""What a plugin author needs, and nothing else.

::

    from worker_core.plugin import SpawnPlan, hookimpl

    class TmpQuota:
        @hookimpl
        def pre_spawn(self, job, plan: SpawnPlan) -> None:
            plan.env["TMPDIR"] = f"/scratch/{job.id}"

Every hook is documented in ``docs/PLUGIN_GUIDE.md`` (and in ``worker_core._hookspecs``);
:mod:`worker_core.testing` helps test a plugin against a real engine. Built-in plugins import
from here and from :mod:`worker_core` only, exactly as a third party's do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _allocator
from ._config import Config, EngineSettings, make_converter
from ._errors import (
    ERROR_CODES,
    AmbiguousJobId,
    ConfigError,
    EngineClosed,
    FailedPrecondition,
    InvalidSpec,
    JobNotFound,
    PermissionDenied,
    PluginError,
    ResourceExhausted,
    WorkerError,
    error_code,
)
from ._executor import Ended, Executor, ExecutorEvents, Launched, LaunchFailed
from ._hookspecs import PROJECT_NAME, hookimpl
from ._jobstore import (
    OUTPUT_BYTES_FACT,
    FinishedSummary,
    JobQuery,
    JobStore,
    StoredJob,
    StoreUnavailable,
)
from ._logs import JsonLinesFormatter, json_lines_logging
from ._model import (
    ACTIVE_STATES,
    WAITING_STATES,
    Action,
    Dependency,
    DependencyKind,
    EndReason,
    ExitResult,
    IOLimit,
    Isolation,
    Job,
    JobSpec,
    JobState,
    Limits,
    Principal,
    QueueReason,
)
from ._notify import Notifier
from ._output import BOTH_STREAMS, Chunk, Follower, OutputStore, StartAt, StartPosition, Stream
from ._plan import NAMESPACES, SpawnPlan
from ._plugins import (
    DEFAULT_PLUGINS,
    PluginInfo,
    config_reference,
    installed_plugins,
    parse_plugin_names,
    plugin_hooks,
)
from ._records import job_from_dict, job_to_dict
from ._toml_errors import TomlProblem, describe_toml_problems, toml_problems
from ._validation import DEFAULT_PATH

if TYPE_CHECKING:
    from ._engine import Engine

#: Hand memory the allocator holds free back to the kernel, soon, on a background thread
#: (an output store calls it after discarding a large log).
release_free_memory_soon = _allocator.release_free_memory_soon
#: Release free memory now if the allocator holds more than ``limit`` bytes free.
release_if_free_above = _allocator.release_if_free_above
#: Keep large buffers for reuse in this process (a server's: process-wide, call it once).
tune_allocator_for_streaming = _allocator.tune_for_streaming


def __getattr__(name: str) -> object:
    if name == "Engine":  # hooks receive the engine; importing it starts nothing
        from ._engine import Engine

        return Engine
    raise AttributeError(name)


__all__ = [
    "ACTIVE_STATES",
    "BOTH_STREAMS",
    "DEFAULT_PATH",
    "DEFAULT_PLUGINS",
    "ERROR_CODES",
    "NAMESPACES",
    "OUTPUT_BYTES_FACT",
    "PROJECT_NAME",
    "WAITING_STATES",
    "Action",
    "AmbiguousJobId",
    "Chunk",
    "Config",
    "ConfigError",
    "Dependency",
    "DependencyKind",
    "EndReason",
    "Ended",
    "Engine",
    "EngineClosed",
    "EngineSettings",
    "Executor",
    "ExecutorEvents",
    "ExitResult",
    "FailedPrecondition",
    "FinishedSummary",
    "Follower",
    "IOLimit",
    "InvalidSpec",
    "Isolation",
    "Job",
    "JobNotFound",
    "JobQuery",
    "JobSpec",
    "JobState",
    "JobStore",
    "JsonLinesFormatter",
    "LaunchFailed",
    "Launched",
    "Limits",
    "Notifier",
    "OutputStore",
    "PermissionDenied",
    "PluginError",
    "PluginInfo",
    "Principal",
    "QueueReason",
    "ResourceExhausted",
    "SpawnPlan",
    "StartAt",
    "StartPosition",
    "StoreUnavailable",
    "StoredJob",
    "Stream",
    "TomlProblem",
    "WorkerError",
    "config_reference",
    "describe_toml_problems",
    "error_code",
    "hookimpl",
    "installed_plugins",
    "job_from_dict",
    "job_to_dict",
    "json_lines_logging",
    "make_converter",
    "parse_plugin_names",
    "plugin_hooks",
    "release_free_memory_soon",
    "release_if_free_above",
    "toml_problems",
    "tune_allocator_for_streaming",
]
