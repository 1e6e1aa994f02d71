"""The executor protocol: where a job's processes run, when not under this host's launcher.

The built-in local launcher runs jobs here (forked by a launcher process, confined by the
plan plugins filled). An executor plugin (``executor`` hook, e.g. ``slurm``) runs them
elsewhere: it receives the job and its spawn plan, reports the start, the output as it
appears and the end, and delivers signals. The engine keeps the records, the output store,
the scheduler and authorization exactly as for local jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ._model import Job
from ._output import Stream
from ._plan import SpawnPlan


class LaunchFailed(Exception):
    """The executor could not start the job; the message says why (the job fails to start)."""


@attrs.frozen
class Launched:
    """A job the executor started: its own id for it (Slurm's job id), kept on the record."""

    external_id: str


@attrs.frozen
class Ended:
    """How a job ended, as the executor saw it. ``lost`` set: the executor lost track of it
    (the job is ended as lost with that message). ``facts`` join the job's facts."""

    exit_code: int | None = None
    signal: int | None = None
    cpu_seconds: float | None = None
    oom_killed: bool = False
    lost: str | None = None
    facts: Mapping[str, Any] = attrs.field(factory=dict)


class ExecutorEvents(Protocol):
    """The engine's side: an executor calls these, from any thread, for jobs it runs."""

    def output(self, job_id: str, stream: Stream, data: bytes) -> None:
        """More output of ``stream``, in order, following what was handed over before."""
        ...

    def ended(self, job_id: str, end: Ended) -> None:
        """The job has ended and every byte of its output was handed over."""
        ...


@runtime_checkable
class Executor(Protocol):
    """What the engine needs from an executor plugin."""

    #: Shown in messages ("the 'slurm' executor").
    name: str

    def start(self, events: ExecutorEvents) -> None:
        """The engine starts; report through ``events`` from now on."""
        ...

    def launch(self, job: Job, plan: SpawnPlan) -> Launched:
        """Start ``job`` (admitted by the engine's scheduler) as ``plan`` says; raise
        :class:`LaunchFailed` if it cannot. May block briefly (a submit command)."""
        ...

    def signal(self, job: Job, signum: int) -> None:
        """Deliver ``signum`` to every process of ``job``."""
        ...

    def freeze(self, job: Job, frozen: bool) -> None:
        """Suspend (``frozen``) or resume every process of ``job``."""
        ...

    def recover(self, job: Job, offsets: Mapping[Stream, int]) -> bool:
        """After a restart: is ``job`` (recorded running, with its ``external_id``) still
        known? If so follow it again, handing over output from ``offsets`` on, and return
        True; False ends it as lost."""
        ...

    def close(self) -> None:
        """The engine is closing (its running jobs were stopped)."""
        ...
