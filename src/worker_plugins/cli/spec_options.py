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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import click

from worker_core.plugin import InvalidSpec, IOLimit, Isolation, JobSpec, Limits

F = TypeVar("F", bound=Callable[..., Any])

_SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DEVICE_NUMBERS_RE = re.compile(r"\d+:\d+")
#: The largest id the kernel accepts; (uid_t)-1 means "unchanged" to setuid and is refused.
_MAX_ID = 2**32 - 2


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional K, M, G or T suffix (binary units).

    ``64M`` is 64 MiB; ``1.5G``, ``512k``, ``64MiB`` and ``64MB`` are accepted too (always
    powers of 1024). Raises ``ValueError`` with a message meant for the user.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 4096, 512K, 64M, 1.5G, 1T)")
    value = int(float(match["number"]) * _UNITS[match["unit"].lower()])
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0 bytes")
    return value


class SizeType(click.ParamType[int]):
    """A byte count written as ``64M``; see :func:`parse_size`."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class PairType(click.ParamType[tuple[str, str]]):
    """``KEY=VALUE`` into a ``(key, value)`` tuple; the key is checked by ``check_key``."""

    def __init__(self, name: str, check_key: Callable[[str], str | None]) -> None:
        self.name = name
        self._check_key = check_key

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, rest = str(value).partition("=")
        if not sep:
            self.fail(f"{value!r} is not {self.name} (no '=')", param, ctx)
        problem = self._check_key(key)
        if problem:
            self.fail(f"{value!r}: {problem}", param, ctx)
        return key, rest


def _env_name_problem(key: str) -> str | None:
    return None if key else "the variable name is empty"


def _option_name_problem(key: str) -> str | None:
    plugin, dot, name = key.partition(".")
    if not (plugin and dot and name):
        return "the option must be named PLUGIN.KEY (e.g. myplugin.level)"
    return None


class IORateType(click.ParamType[tuple[str, int]]):
    """``DEV=RATE`` for the per-device IO caps: ``(device, amount)``.

    DEV is a block device path (``/dev/vda``) or ``MAJ:MIN`` (``8:0``). RATE is a size
    (``10M`` bytes per second) for the bps flags and a plain count for the iops flags.
    """

    def __init__(self, per_second: str) -> None:
        self.per_second = per_second
        self.name = f"DEV={per_second.upper()}"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        # The device comes first and a device path never holds '=', but be strict: the last
        # '=' separates, so a rate can never swallow part of the path.
        device, sep, rate = str(value).rpartition("=")
        if not sep or not device or not rate:
            self.fail(f"{value!r} is not DEV=RATE (e.g. /dev/vda=10M or 8:0=10M)", param, ctx)
        if not (device.startswith("/") or _DEVICE_NUMBERS_RE.fullmatch(device)):
            self.fail(
                f"{device!r} is neither a device path (/dev/vda) nor MAJ:MIN (8:0)", param, ctx
            )
        try:
            amount = parse_size(rate) if self.per_second == "bytes" else _positive_count(rate)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return device, amount


def _positive_count(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"{text!r} is not a positive whole number of operations per second")
    return int(text)


SIZE = SizeType()
ENV_PAIR = PairType("K=V", _env_name_problem)
OPTION_PAIR = PairType("PLUGIN.KEY=VALUE", _option_name_problem)
IO_BPS = IORateType("bytes")
IO_IOPS = IORateType("iops")


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
        click.FloatRange(min=0, min_open=True),
        "SECONDS",
        "Stop the job when it has run this long.",
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
)

_BY_FIELD = {flag.field: flag for flag in SPEC_FLAGS}
_BY_KEYWORD = {flag.keyword: flag for flag in SPEC_FLAGS}
_IO_CAPS = tuple(flag for flag in SPEC_FLAGS if flag.field.startswith("limits.io."))


def spec_options(command: F) -> F:
    """Add the job-spec flags to a click command; pass their values on to :func:`build_spec`."""
    for flag in reversed(SPEC_FLAGS):
        command = flag.option()(command)
    return command


def flag_for(field: str) -> str | None:
    """The flag that sets ``field`` (a spec field as :class:`~worker_core.InvalidSpec` names
    it, from this process or a server), or None for a field no flag sets (``command``).

    An item names its collection's flag (``env['A']``: ``--env``, ``options.demo.level``:
    ``--option``); ``limits.io`` and its items name the IO cap flags together.
    """
    if field in _BY_FIELD:
        return _BY_FIELD[field].flag
    if field == "limits.io" or field.startswith(("limits.io[", "limits.io.")):
        return "/".join(flag.flag for flag in _IO_CAPS)
    collection = re.split(r"[.\[]", field, maxsplit=1)[0]
    if collection in ("env", "options") and collection != field:
        return _BY_FIELD[collection].flag
    return None


def in_flag_terms(field: str, problem: str) -> str:
    """``problem`` with ``field`` named as the flag the user typed: ``--uid: jobs may not run as
    root here``; ``field: problem`` when no flag sets the field.

    For refusals that come back from the engine or a server (``isolation.uid: ...``) after the
    flags themselves were accepted.
    """
    flag = flag_for(field)
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


def _check_cwd(cwd: str | None) -> str:
    if cwd is None:
        return "/"
    if not cwd.startswith("/"):
        # The directory is on the host that runs the job, which may not be this one: resolving
        # it against our own cwd would silently name another directory.
        raise click.BadParameter(
            f"must be an absolute path, got {cwd!r}", param_hint=_BY_FIELD["cwd"].flag
        )
    return cwd


def build_spec(command: str, args: Sequence[str] = (), **flags: Any) -> JobSpec:
    """The :class:`JobSpec` for ``command`` and the parsed values of :func:`spec_options`.

    ``flags`` are the values click passes (``memory=67108864``, ``env=(("A", "1"),)``,
    ``io_read_bps=(("/dev/vda", 10485760),)``); a keyword of no flag is a ``TypeError``.
    Raises :class:`click.BadParameter` naming the flag for anything the model refuses. A
    repeated ``-e``/``-o`` key takes its last value, as in a shell; a device given twice for the
    same IO cap with different values is an error.
    """
    unknown = sorted(set(flags) - set(_BY_KEYWORD))
    if unknown:
        raise TypeError(f"build_spec() got unexpected keyword arguments: {', '.join(unknown)}")
    # The spec's fields, grouped the way JobSpec nests them.
    sections: dict[str, dict[str, Any]] = {"limits": {}, "isolation": {}, "": {}}
    io: dict[SpecFlag, Iterable[tuple[str, int]]] = {}
    for flag in SPEC_FLAGS:
        value = flags.get(flag.keyword)
        if value is None or (flag.multiple and not value):
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
            cwd=_check_cwd(top.get("cwd")),
            limits=Limits(**sections["limits"], io=_merge_io(io)),
            isolation=Isolation(**sections["isolation"]),
            timeout=top.get("timeout"),
            options=top.get("options", {}),
        )
    except InvalidSpec as exc:
        hint = flag_for(exc.field)
        raise click.BadParameter(exc.problem if hint else str(exc), param_hint=hint) from None
