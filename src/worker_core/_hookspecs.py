"""Every hook the engine fires, in one place.

Project name ``worker``; third-party plugins register under the ``worker.plugins`` entry-point
group and mark their implementations with :data:`worker_core.hookimpl`. Unless a spec says
otherwise, every implementation is called and the results are collected in a list; the first
implementation that raises ends the call (pluggy's rule), and the exception reaches the
engine. The observer hooks ``post_exit``, ``on_state_change`` and ``on_output`` are the
exception: each implementation runs in isolation (their specs say so).

Wrappers (``@hookimpl(wrapper=True)``, or the old-style ``hookwrapper=True``) are supported on
every hook and run around the implementations the pluggy way. ``WORKER_TRACE_PLUGINS=1``
logs every implementation's call (logger ``worker.plugins.trace``).

Threads: the engine is thread-safe and its hooks fire on its own threads, named in each spec.
A hook must not block for long on the output thread (``on_output``) or it delays every job's
output; it must never call back into the engine while holding a lock of its own that an
engine call could need.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from ._config import Config
    from ._engine import Engine
    from ._executor import Executor
    from ._jobstore import JobStore
    from ._model import Action, ExitResult, Job, JobSpec, JobState, Principal
    from ._output import Chunk, OutputStore
    from ._plan import SpawnPlan

PROJECT_NAME = "worker"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Mark a plugin's hook implementations: ``@hookimpl def pre_spawn(job, plan): ...``
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------------------------
# configuration and lifecycle
# -------------------------------------------------------------------------------------------


@hookspec
def configure(engine: Engine, config: Config) -> None:
    """Read this plugin's configuration and prepare; fires once, before the engine starts.

    Fires on the thread constructing the engine, after every plugin is loaded. A plugin reads
    its own section with ``config.section("name", SomeAttrsClass)``, which validates it and
    raises :class:`~worker_core._errors.ConfigError` naming the key. Raising aborts startup.
    """


@hookspec
def startup(engine: Engine) -> None:
    """The engine has started (its launcher is up); no job has been submitted yet.

    Fires on the thread calling :meth:`Engine.start`. Recover or clean up state left by an
    earlier run here (the ``cgroups`` plugin removes leftover job cgroups). Raising aborts
    startup.
    """


@hookspec
def shutdown(engine: Engine) -> None:
    """The engine is closing: every job has ended. Fires on the thread calling :meth:`Engine.close`."""


# -------------------------------------------------------------------------------------------
# jobs: validation and the spawn path
# -------------------------------------------------------------------------------------------


@hookspec
def validate_spec(spec: JobSpec) -> Iterable[str] | None:
    """Check a job spec at submit time, before anything is created; return the fields enforced.

    Raise :class:`~worker_core._errors.InvalidSpec` naming the field for a value this plugin
    cannot honour (a controller the host lacks, a limit out of range). Return the dotted
    names of the spec fields this plugin enforces (``"limits.memory_max"``,
    ``"isolation.uid"``, ``"options.rlimits.nofile"``): the engine refuses a spec that sets a
    field no enabled plugin enforces, so a limit is never silently ignored.

    Fires on the submitting thread. All results are collected.
    """


@hookspec
def pre_spawn(job: Job, plan: SpawnPlan) -> None:
    """Fill in the spawn plan for ``job`` (state PENDING): cgroups, namespaces, ids, rlimits, env.

    May change ``plan`` only; plugins never run code in the child, the launcher applies the
    plan between fork and exec. Create per-job resources here (a cgroup); ``post_exit`` is
    called for every job whose ``pre_spawn`` ran, even if a later plugin raised or the
    process failed to start, so undo them there. Raising :class:`InvalidSpec` or
    :class:`WorkerError` fails the job to start with that message.

    Fires on the submitting thread for a job that starts at once; for one that waited in the
    queue, on the thread whose scheduling pass admitted it (a finalizer thread when another
    job ended, the thread releasing a held job, the engine's timer thread at a begin time).
    All implementations are called.
    """


@hookspec(firstresult=True)
def signal_job(job: Job, signum: int) -> bool | None:
    """Deliver ``signum`` to every process of ``job``; return ``True`` if done.

    The engine calls this to stop a job (SIGTERM, then SIGKILL) and, with SIGKILL, when the
    job's main process has exited, to kill anything it left behind. A plugin that can reach
    the whole job (``cgroups``: ``cgroup.kill``, or freeze/kill/thaw on v1) answers; without
    one the engine signals the job's process group and its descendants through the launcher,
    which never signals a PID it has reaped.

    Fires on the thread stopping the job, on the scheduler thread (the SIGKILL after a grace
    period, time limits) and on a finalizer thread (clean-up after exit).
    Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def freeze_job(job: Job, frozen: bool) -> bool | None:
    """Freeze (``frozen=True``) or thaw every process of ``job``; return ``True`` if done.

    The engine calls this to pause and resume a job. A plugin that holds the whole job
    (``cgroups``: ``cgroup.freeze`` on v2, the freezer controller on v1) answers; without one
    the engine sends SIGSTOP / SIGCONT to the job's process group and its descendants.

    Fires on the thread pausing or resuming the job. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def job_usage(job: Job) -> dict[str, int | float] | None:
    """What a running or paused ``job`` uses now: ``cpu_seconds``, ``memory_current`` (bytes).

    Read from the job's cgroup by ``cgroups``; shown by ``get`` while the job runs. Must be
    cheap (a few file reads). Fires on the thread asking. Stops at the first non-None result.
    """


@hookspec
def admit(job: Job) -> str | None:
    """May the scheduler start ``job`` (QUEUED, its dependencies met, within every budget) now?

    Return None to let it start, or a short reason to keep it queued for now (its queue
    reason becomes ``plugin``); the scheduler asks again at its next pass (when a job ends,
    or another is queued or released). Any reason delays the job.

    Each implementation runs in isolation: one that raises is logged, naming the plugin, and
    counts as no answer; the others are still asked. A wrapper runs once around all of them;
    its ``yield`` returns their answers and never raises.

    Fires on the thread making the scheduling pass (the submitting or releasing thread, a
    finalizer thread when a job ends, the engine's timer thread at a begin time), for every
    start of a queued job, under the scheduler's lock: be cheap and never call back into the
    engine.
    """


@hookspec
def post_exit(job: Job, result: ExitResult) -> None:
    """The job's process has ended (or never started); clean up and report facts.

    ``job`` is the last snapshot before the job ends; ``result`` carries the exit code or
    signal and rusage figures. A plugin may set ``result.oom_killed`` and add to
    ``result.facts`` (``memory_peak``, ``cpu_seconds``); the engine folds them into the final
    record. Remove per-job resources here.

    Each implementation runs in isolation: one that raises is logged, naming the plugin, and
    the others still run. A wrapper runs once around all of them (``wrapper=True``, or the
    old-style ``hookwrapper=True``); its ``yield`` returns when every implementation has run
    and never raises (their errors are logged, not passed to it); an error in the wrapper
    itself is logged too and does not stop the implementations inside it.

    Fires on an engine finalizer thread, after the job's output has been read to the end (for
    a job that failed to start, inline on the thread that was starting it).
    """


@hookspec
def on_state_change(job: Job, previous: JobState | None) -> None:
    """``job`` has just moved from ``previous`` to ``job.state`` (``previous`` is None on submit).

    For observers (audit logs, metrics). Must not block. Fires on whichever engine thread
    made the change, after the new record was handed to the job store; calls for one job
    come in the order of its transitions, one at a time.

    Each implementation runs in isolation: one that raises is logged, naming the plugin, and
    the others still see the event. A wrapper runs once around all of them; its ``yield``
    returns when every implementation has run and never raises; an error in the wrapper
    itself is logged and does not stop the implementations inside it.
    """


# -------------------------------------------------------------------------------------------
# authorization
# -------------------------------------------------------------------------------------------


@hookspec
def authorize(principal: Principal, action: Action, job: Job | None) -> bool | None:
    """May ``principal`` perform ``action`` on ``job``?

    ``job`` is the provisional record for SUBMIT (its spec is what would run; it is not
    registered yet), the target for STOP and READ, and None for listing in general. Return
    ``True`` to allow, ``False`` to deny, ``None`` to abstain. Every answer is collected; any
    ``False`` denies; with an authorization plugin loaded, no ``True`` is a deny. With none
    loaded, every principal is allowed.

    Fires on the calling thread, for every operation that names a principal.
    """


# -------------------------------------------------------------------------------------------
# output
# -------------------------------------------------------------------------------------------


@hookspec
def on_output(job: Job, chunk: Chunk) -> None:
    """Every chunk of output, in order within its stream, as it is read from the job.

    Fires on the engine's output thread, which serves every job, after the output store has
    kept the chunk: do not block (queue work elsewhere). The job is not slowed by a follower;
    it is by a slow hook.

    Each implementation runs in isolation: one that raises is logged, naming the plugin, and
    the others still get the chunk. A wrapper runs once around all of them; its ``yield``
    returns when every implementation has run and never raises; an error in the wrapper
    itself is logged and does not stop the implementations inside it.
    """


@hookspec(firstresult=True)
def output_store(engine: Engine) -> OutputStore | None:
    """The store that keeps every job's output and serves followers.

    The built-in ``memory`` plugin answers last (``trylast``), so any other store enabled
    wins; ``spool`` keeps output in files under :attr:`Engine.state_dir`. Only the store
    returned here receives output (through :class:`~worker_core.plugin.OutputStore`'s
    methods); the engine calls no other. Fires once, on the thread calling
    :meth:`Engine.start`, after the state directory is locked and the job store chosen.
    Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def executor(engine: Engine) -> Executor | None:
    """Where jobs run, if not under this host's launcher (:class:`~worker_core.plugin.Executor`).

    No answer (the default): the local launcher runs every job here. An executor plugin
    (``slurm``) answers with an object that launches admitted jobs elsewhere, reports their
    output and end, and delivers signals; the engine still keeps records, output, the
    scheduler and authorization. Plugins that act between fork and exec on this host (they
    set ``local_only = True``: ``netns``, ``pidns``, ``mntns``, ``runas``, ``cgroups``) are
    refused at start with another executor. Fires once, on the thread calling
    :meth:`Engine.start`, after the stores. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def job_store(engine: Engine) -> JobStore | None:
    """The store that keeps job records (:class:`~worker_core.plugin.JobStore`).

    The built-in ``memory`` plugin answers last (``trylast``); ``sqlite`` keeps records in a
    database under :attr:`Engine.state_dir`, so they outlive the process. Fires once, on the
    thread calling :meth:`Engine.start`, after the state directory is locked and before
    recovery. Raising aborts startup (a corrupt database); so does no answer at all.
    Stops at the first non-None result.
    """


# -------------------------------------------------------------------------------------------
# registration: command-line transports and commands
# -------------------------------------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``worker`` command line (``serve``, ``job``, ``run``, ``certs``...).

    Fires on the main thread, before arguments are parsed, when the ``worker`` program lists
    its commands (``--help``, completion) or is given one that is not built in: a built-in
    command is imported on its own. A plugin adds its commands with ``cli.add_command(...)``.
    """


# -------------------------------------------------------------------------------------------
# transports
# -------------------------------------------------------------------------------------------


@hookspec
def serve_transports(engine: Engine) -> object | None:
    """A transport for ``worker serve`` to run in front of ``engine``, or None to offer none.

    The object returned has ``name`` (a short string, ``"grpc"``), ``async start(engine) ->
    list[str]`` (begin serving ``engine``; return the addresses it listens on, such as
    ``"127.0.0.1:50051"``; raise :class:`~worker_core._errors.ConfigError` with one line that
    names an address it cannot bind) and ``async stop(grace: float) -> None`` (stop
    accepting, give open calls ``grace`` seconds, cancel the rest). ``worker serve`` starts
    every transport returned and, on SIGTERM or SIGINT, stops every job first, then every
    transport; with no transport at all it refuses to start.

    Fires once, on the main thread of ``worker serve``, after every plugin is configured and
    before the engine starts: read and check files here (raising stops serve with the
    message, before any job could run), but do not listen yet and do not change the engine.
    ``start`` and ``stop`` then run on serve's one asyncio event loop, on the main thread,
    which every transport shares: they and the calls they serve must never block it (engine
    calls that wait go through ``engine.aio``). All results are collected.
    """
