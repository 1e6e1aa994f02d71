"""The typed errors the engine raises.

Every error a caller can provoke is a subclass of :class:`WorkerError`, so a transport maps
them to status codes in one table and nothing escapes as an unknown failure.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidSpec(WorkerError, ValueError):
    """A job specification (or a request built from one) is malformed or cannot be honoured.

    ``field`` names the offending field in dotted form, e.g. ``limits.memory_max``.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class JobNotFound(WorkerError, LookupError):
    """No job with this id exists, or the caller may not see it (ids cannot be probed)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


class AmbiguousJobId(InvalidSpec):
    """A job id prefix matches several jobs the caller may read."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        super().__init__("job_id", f"{prefix!r} matches several jobs: {', '.join(candidates)}")
        self.prefix = prefix
        self.candidates = candidates


class PermissionDenied(WorkerError):
    """The principal may not perform the action."""


class FailedPrecondition(WorkerError):
    """The request is well formed but the system is not in a state to honour it."""


class ResourceExhausted(WorkerError):
    """A configured capacity (jobs, streams, bytes) is used up."""


class PluginError(WorkerError):
    """A plugin could not be found, loaded or validated; the message names the plugin."""


class ConfigError(WorkerError, ValueError):
    """The configuration is invalid; the message names the section and key."""


class EngineClosed(FailedPrecondition):
    """The engine was shut down (or never started) and accepts no more work."""


class IllegalTransition(RuntimeError):
    """A job state moved backwards or sideways. Always a bug in the engine, never user input."""


#: The one table from domain errors to transport-neutral status names (gRPC's code names;
#: the HTTPS transport maps each to an HTTP status). Most specific first: the first class
#: an error is an instance of decides. An error outside it is a bug: INTERNAL.
ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidSpec, "INVALID_ARGUMENT"),  # AmbiguousJobId too: it lists the candidates
    (JobNotFound, "NOT_FOUND"),
    (PermissionDenied, "PERMISSION_DENIED"),
    (FailedPrecondition, "FAILED_PRECONDITION"),  # EngineClosed too
    (ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (NotImplementedError, "UNIMPLEMENTED"),
)

#: Errors from other modules, by class name, to keep this module free of imports.
_BY_NAME = {"StoreUnavailable": "UNAVAILABLE"}


def error_code(exc: BaseException) -> str | None:
    """The status name of a domain error (``"NOT_FOUND"``), or None outside the table."""
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code
    return _BY_NAME.get(type(exc).__name__)
