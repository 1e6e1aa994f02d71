"""The job-spec flags shared by ``worker run`` and ``worker job submit``.

:data:`SPEC_FLAGS` is the one table of flags, each with the spec field it sets; from it
:func:`spec_options` adds the flags to a click command, :func:`build_spec` turns their values
into a :class:`~worker_core.JobSpec`, and :func:`flag_for` names the flag behind a field. Each
flag's value is parsed by its click type, so a bad value is reported as a usage error naming
the flag (``Invalid value for '--memory': ...``) before anything is sent anywhere; what only
the whole spec can check (the model's own validators, and the engine or a server refusing a
field) is named by the flag that set the field (:func:`in_flag_terms`).

Whether a limit can be honoured is not decided here: the engine refuses a limit that no
enabled plugin enforces, so the same flags work against any server.

The scheduling flags (``--priority``, ``--after``, ``--hold``, ``--begin``) are in the table
too; ``worker run`` leaves them out (:func:`local_spec_options`): a job of its own engine has
no queue to wait in and no other job to wait for.

Sizes (``64M``) and durations (``30s``, ``5m``, ``1h30m``; a bare number is seconds) are
written the same way wherever a flag takes one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import click

# Only the library's root: this module is imported by `worker run` and `worker job submit`,
# and the plugin surface (worker_core.plugin) would add the engine's machinery to both.
from worker_core import Dependency, DependencyKind, InvalidSpec, IOLimit, Isolation, JobSpec, Limits

from .values import BEGIN, DURATION, ENV_PAIR, IO_BPS, IO_IOPS, OPTION_PAIR, SIZE

F = TypeVar("F", bound=Callable[..., Any])

#: The largest id the kernel accepts; (uid_t)-1 means "unchanged" to setuid and is refused.
_MAX_ID = 2**32 - 2


@attrs.frozen(eq=False)
class SpecFlag:
    """One job-spec flag: how it is spelt, the :class:`JobSpec` field it sets, and how click
    reads it. :data:`SPEC_FLAGS` is the one table; the click options, the spec's building and
    the naming of errors are all derived from it."""

    #: The flag's spellings, the long one last (``("-e", "--env")``).
    names: tuple[str, ...]
    #: The field it sets, dotted as :class:`~worker_core.InvalidSpec` names it
    #: (``limits.memory_max``, ``isolation.uid``, ``limits.io.read_bps``, ``env``).
    field: str
    type: Any
    metavar: str
    help: str
    #: Repeatable: the values arrive as a tuple (pairs for ``-e``, ``-o`` and the IO caps).
    multiple: bool = False
    #: The keyword the value is passed by, when not the long name's (``--option``: options).
    dest: str | None = None
    #: An on/off flag that takes no value (``--hold``).
    is_flag: bool = False
    #: For the scheduler of a server: left out of ``worker run`` (:func:`local_spec_options`).
    scheduling: bool = False

    @property
    def flag(self) -> str:
        """The long spelling, the one errors name (``--memory``)."""
        return self.names[-1]

    @property
    def keyword(self) -> str:
        """The keyword argument of the click callback and of :func:`build_spec`."""
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def option(self) -> Callable[[F], F]:
        names = (*self.names, self.dest) if self.dest else self.names
        if self.is_flag:
            return click.option(*names, is_flag=True, help=self.help)
        return click.option(
            *names, type=self.type, multiple=self.multiple, metavar=self.metavar, help=self.help
        )


#: Every job-spec flag, in the order ``--help`` lists them.
SPEC_FLAGS: tuple[SpecFlag, ...] = (
    SpecFlag(
        ("--memory",),
        "limits.memory_max",
        SIZE,
        "SIZE",
        "Memory maximum; the job is OOM-killed above it (64M, 1.5G; K/M/G/T = 1024^n).",
    ),
    SpecFlag(
        ("--memory-high",),
        "limits.memory_high",
        SIZE,
        "SIZE",
        "Memory soft limit: reclaim/throttle above it.",
    ),
    SpecFlag(
        ("--cpus",),
        "limits.cpu",
        click.FloatRange(min=0, min_open=True),
        "N",
        "CPU time as a fraction of cores (0.5 = half of one core, 2 = two cores).",
    ),
    SpecFlag(
        ("--cpu-weight",),
        "limits.cpu_weight",
        click.IntRange(1, 10000),
        "1-10000",
        "Relative CPU share under contention (default 100).",
    ),
    SpecFlag(
        ("--io-weight",),
        "limits.io_weight",
        click.IntRange(1, 10000),
        "1-10000",
        "Relative IO share under contention (default 100).",
    ),
    SpecFlag(
        ("--io-read-bps",),
        "limits.io.read_bps",
        IO_BPS,
        "DEV=RATE",
        "Read bytes/s cap on a device, e.g. /dev/vda=10M or 8:0=10M. Repeatable.",
        multiple=True,
    ),
    SpecFlag(
        ("--io-write-bps",),
        "limits.io.write_bps",
        IO_BPS,
        "DEV=RATE",
        "Write bytes/s cap.",
        multiple=True,
    ),
    SpecFlag(
        ("--io-read-iops",),
        "limits.io.read_iops",
        IO_IOPS,
        "DEV=N",
        "Read operations/s cap.",
        multiple=True,
    ),
    SpecFlag(
        ("--io-write-iops",),
        "limits.io.write_iops",
        IO_IOPS,
        "DEV=N",
        "Write operations/s cap.",
        multiple=True,
    ),
    SpecFlag(
        ("--pids",),
        "limits.pids_max",
        click.IntRange(min=1),
        "N",
        "Most processes the job may hold.",
    ),
    SpecFlag(
        ("-e", "--env"),
        "env",
        ENV_PAIR,
        "K=V",
        "Environment variable for the job (repeatable). The job gets only these and PATH.",
        multiple=True,
    ),
    SpecFlag(("--cwd",), "cwd", None, "DIR", "Absolute working directory of the job. [default: /]"),
    SpecFlag(
        ("--timeout",),
        "timeout",
        DURATION,
        "DURATION",
        "Stop the job when it has run this long (30s, 5m, 1h30m; a bare number is seconds).",
    ),
    SpecFlag(
        ("--uid",),
        "isolation.uid",
        click.IntRange(0, _MAX_ID),
        "UID",
        "Run the job as this user id.",
    ),
    SpecFlag(
        ("--gid",),
        "isolation.gid",
        click.IntRange(0, _MAX_ID),
        "GID",
        "Run the job as this group id.",
    ),
    SpecFlag(
        ("-o", "--option"),
        "options",
        OPTION_PAIR,
        "PLUGIN.KEY=VALUE",
        "An option for a (third-party) plugin. Repeatable.",
        multiple=True,
        dest="options",
    ),
    SpecFlag(
        ("--priority",),
        "priority",
        click.IntRange(-1000, 1000),
        "-1000..1000",
        "Higher starts first among queued jobs (default 0).",
        scheduling=True,
    ),
    SpecFlag(
        ("--after",),
        "after.ok",
        str,
        "JOB_ID",
        "Start only once this job exited with code 0 (repeatable; an id prefix will do).",
        multiple=True,
        scheduling=True,
    ),
    SpecFlag(
        ("--after-any",),
        "after.any",
        str,
        "JOB_ID",
        "Start only once this job ended, however it ended (repeatable).",
        multiple=True,
        scheduling=True,
    ),
    SpecFlag(
        ("--after-fail",),
        "after.failed",
        str,
        "JOB_ID",
        "Start only once this job ended unsuccessfully (repeatable).",
        multiple=True,
        scheduling=True,
    ),
    SpecFlag(
        ("--hold",),
        "hold",
        None,
        "",
        "Queue the job held: it starts only once `worker job release` lets it.",
        is_flag=True,
        scheduling=True,
    ),
    SpecFlag(
        ("--begin",),
        "begin_at",
        BEGIN,
        "WHEN",
        "Not before this time: a duration from now (10m, 2h) or an ISO time "
        "(2024-05-01T02:00, local unless it has an offset).",
        scheduling=True,
    ),
)

_BY_FIELD = {flag.field: flag for flag in SPEC_FLAGS}
_BY_KEYWORD = {flag.keyword: flag for flag in SPEC_FLAGS}
_IO_CAPS = tuple(flag for flag in SPEC_FLAGS if flag.field.startswith("limits.io."))
_AFTER = {DependencyKind(flag.field.partition(".")[2]): flag for flag in SPEC_FLAGS
          if flag.field.startswith("after.")}  # fmt: skip
_AFTER_INDEX = re.compile(r"after\[(\d+)\]")


def spec_options(command: F) -> F:
    """Add the job-spec flags to a click command; pass their values on to :func:`build_spec`."""
    for flag in reversed(SPEC_FLAGS):
        command = flag.option()(command)
    return command


def local_spec_options(command: F) -> F:
    """:func:`spec_options` without the scheduling flags, for a job run here at once."""
    for flag in reversed(SPEC_FLAGS):
        if not flag.scheduling:
            command = flag.option()(command)
    return command


def flag_for(field: str, spec: JobSpec | None = None) -> str | None:
    """The flag that sets ``field`` (a spec field as :class:`~worker_core.InvalidSpec` names
    it, from this process or a server), or None for a field no flag sets (``command``).

    An item names its collection's flag (``env['A']``: ``--env``, ``options.demo.level``:
    ``--option``); ``limits.io`` and its items name the IO cap flags together, as ``after``
    names the dependency flags, unless ``spec`` (the spec refused) tells which one set
    ``after[i]``.
    """
    if field in _BY_FIELD:
        return _BY_FIELD[field].flag
    if field == "limits.io" or field.startswith(("limits.io[", "limits.io.")):
        return "/".join(flag.flag for flag in _IO_CAPS)
    if field == "after" or field.startswith(("after[", "after.")):
        index = _AFTER_INDEX.match(field)
        if spec is not None and index and int(index[1]) < len(spec.after):
            return _AFTER[spec.after[int(index[1])].kind].flag
        return "/".join(flag.flag for flag in _AFTER.values())
    collection = re.split(r"[.\[]", field, maxsplit=1)[0]
    if collection in ("env", "options") and collection != field:
        return _BY_FIELD[collection].flag
    return None


def in_flag_terms(field: str, problem: str, spec: JobSpec | None = None) -> str:
    """``problem`` with ``field`` named as the flag the user typed: ``--uid: jobs may not run as
    root here``; ``field: problem`` when no flag sets the field.

    For refusals that come back from the engine or a server (``isolation.uid: ...``) after the
    flags themselves were accepted; ``spec`` is the spec refused (see :func:`flag_for`).
    """
    flag = flag_for(field, spec)
    return f"{flag or field}: {problem}"


def _merge_io(caps: Mapping[SpecFlag, Iterable[tuple[str, int]]]) -> list[IOLimit]:
    """One IOLimit per device, in the order devices were first named."""
    per_device: dict[str, dict[str, int]] = {}
    for flag, values in caps.items():
        field = flag.field.rpartition(".")[2]
        for device, amount in values:
            device_caps = per_device.setdefault(device, {})
            if field in device_caps and device_caps[field] != amount:
                raise click.BadParameter(
                    f"{device} is given twice ({device_caps[field]} and {amount})",
                    param_hint=flag.flag,
                )
            device_caps[field] = amount
    return [IOLimit(device=device, **device_caps) for device, device_caps in per_device.items()]


def _check_cwd(cwd: str | None, local_cwd: str | None) -> str:
    if local_cwd is not None:
        # A job of this host: its directory is named as a shell would, from here.
        return os.path.normpath(os.path.join(local_cwd, cwd or "."))
    if cwd is None:
        return "/"
    if not cwd.startswith("/"):
        # The directory is on the host that runs the job, which may not be this one: resolving
        # it against our own cwd would silently name another directory.
        raise click.BadParameter(
            f"must be an absolute path, got {cwd!r}", param_hint=_BY_FIELD["cwd"].flag
        )
    return cwd


def _dependencies(flags: Mapping[str, Any]) -> list[Dependency]:
    """``--after``, ``--after-any`` and ``--after-fail`` as the spec's dependency list."""
    found = []
    for kind, flag in _AFTER.items():
        for job_id in flags.get(flag.keyword) or ():
            if not job_id.strip():
                raise click.BadParameter(
                    "must name a job (an id or a prefix)", param_hint=flag.flag
                )
            found.append(Dependency(job_id=job_id.strip(), kind=kind))
    return found


def build_spec(
    command: str, args: Sequence[str] = (), *, local_cwd: str | None = None, **flags: Any
) -> JobSpec:
    """The :class:`JobSpec` for ``command`` and the parsed values of :func:`spec_options`.

    ``flags`` are the values click passes (``memory=67108864``, ``env=(("A", "1"),)``,
    ``io_read_bps=(("/dev/vda", 10485760),)``); a keyword of no flag is a ``TypeError``.
    Raises :class:`click.BadParameter` naming the flag for anything the model refuses. A
    repeated ``-e``/``-o`` key takes its last value, as in a shell; a device given twice for the
    same IO cap with different values is an error.

    ``local_cwd`` is for a job of this host (``worker run``): its working directory defaults
    to that one and a relative ``--cwd`` is relative to it. Without it (a server's job), the
    directory is ``/`` unless ``--cwd`` names an absolute one.
    """
    unknown = sorted(set(flags) - set(_BY_KEYWORD))
    if unknown:
        raise TypeError(f"build_spec() got unexpected keyword arguments: {', '.join(unknown)}")
    # The spec's fields, grouped the way JobSpec nests them.
    sections: dict[str, dict[str, Any]] = {"limits": {}, "isolation": {}, "": {}}
    io: dict[SpecFlag, Iterable[tuple[str, int]]] = {}
    for flag in SPEC_FLAGS:
        value = flags.get(flag.keyword)
        if value is None or (flag.multiple and not value) or flag in _AFTER.values():
            continue
        if flag in _IO_CAPS:
            io[flag] = value
            continue
        section, _, name = flag.field.rpartition(".")
        sections[section][name] = dict(value) if flag.multiple else value
    top = sections[""]
    try:
        return JobSpec(
            command=command,
            args=tuple(args),
            env=top.get("env", {}),
            cwd=_check_cwd(top.get("cwd"), local_cwd),
            limits=Limits(**sections["limits"], io=_merge_io(io)),
            isolation=Isolation(**sections["isolation"]),
            timeout=top.get("timeout"),
            options=top.get("options", {}),
            priority=top.get("priority", 0),
            after=_dependencies(flags),
            hold=bool(top.get("hold", False)),
            begin_at=top.get("begin_at"),
        )
    except InvalidSpec as exc:
        hint = flag_for(exc.field)
        raise click.BadParameter(exc.problem if hint else str(exc), param_hint=hint) from None
