"""The job-spec flags shared by ``worker run`` and ``worker job submit``.

:func:`spec_options` adds the flags to a click command; :func:`build_spec` turns their values
into a :class:`~worker_core.JobSpec`. Each flag's value is parsed by its click type, so a bad
value is reported as a usage error naming the flag (``Invalid value for '--memory': ...``)
before anything is sent anywhere; what only the whole spec can check (the model's own
validators) is mapped back to the flag that set the field.

Whether a limit can be honoured is not decided here: the engine refuses a limit that no
enabled plugin enforces, so the same flags work against any server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

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

#: IO flag -> the IOLimit field it sets.
_IO_FLAGS = {
    "io_read_bps": "read_bps",
    "io_write_bps": "write_bps",
    "io_read_iops": "read_iops",
    "io_write_iops": "write_iops",
}

#: Spec field (as InvalidSpec names it) -> the flag that sets it, to point a model error at
#: what the user typed.
_FLAG_FOR_FIELD = {
    "limits.memory_max": "--memory",
    "limits.memory_high": "--memory-high",
    "limits.cpu": "--cpus",
    "limits.cpu_weight": "--cpu-weight",
    "limits.io_weight": "--io-weight",
    "limits.pids_max": "--pids",
    "isolation.uid": "--uid",
    "isolation.gid": "--gid",
    "timeout": "--timeout",
    "cwd": "--cwd",
    "limits.io.read_bps": "--io-read-bps",
    "limits.io.write_bps": "--io-write-bps",
    "limits.io.read_iops": "--io-read-iops",
    "limits.io.write_iops": "--io-write-iops",
}

_SPEC_FLAGS: list[Callable[[Any], Any]] = [
    click.option(
        "--memory",
        type=SIZE,
        metavar="SIZE",
        help="Memory maximum; the job is OOM-killed above it (64M, 1.5G; K/M/G/T = 1024^n).",
    ),
    click.option(
        "--memory-high",
        type=SIZE,
        metavar="SIZE",
        help="Memory soft limit: reclaim/throttle above it.",
    ),
    click.option(
        "--cpus",
        type=click.FloatRange(min=0, min_open=True),
        metavar="N",
        help="CPU time as a fraction of cores (0.5 = half of one core, 2 = two cores).",
    ),
    click.option(
        "--cpu-weight",
        type=click.IntRange(1, 10000),
        metavar="1-10000",
        help="Relative CPU share under contention (default 100).",
    ),
    click.option(
        "--io-weight",
        type=click.IntRange(1, 10000),
        metavar="1-10000",
        help="Relative IO share under contention (default 100).",
    ),
    click.option(
        "--io-read-bps",
        type=IO_BPS,
        multiple=True,
        metavar="DEV=RATE",
        help="Read bytes/s cap on a device, e.g. /dev/vda=10M or 8:0=10M. Repeatable.",
    ),
    click.option(
        "--io-write-bps", type=IO_BPS, multiple=True, metavar="DEV=RATE", help="Write bytes/s cap."
    ),
    click.option(
        "--io-read-iops",
        type=IO_IOPS,
        multiple=True,
        metavar="DEV=N",
        help="Read operations/s cap.",
    ),
    click.option(
        "--io-write-iops",
        type=IO_IOPS,
        multiple=True,
        metavar="DEV=N",
        help="Write operations/s cap.",
    ),
    click.option(
        "--pids", type=click.IntRange(min=1), metavar="N", help="Most processes the job may hold."
    ),
    click.option(
        "-e",
        "--env",
        type=ENV_PAIR,
        multiple=True,
        metavar="K=V",
        help="Environment variable for the job (repeatable). The job gets only these and PATH.",
    ),
    click.option(
        "--cwd", metavar="DIR", help="Absolute working directory of the job. [default: /]"
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        help="Stop the job when it has run this long.",
    ),
    click.option(
        "--uid", type=click.IntRange(0, _MAX_ID), metavar="UID", help="Run the job as this user id."
    ),
    click.option(
        "--gid",
        type=click.IntRange(0, _MAX_ID),
        metavar="GID",
        help="Run the job as this group id.",
    ),
    click.option(
        "-o",
        "--option",
        "options",
        type=OPTION_PAIR,
        multiple=True,
        metavar="PLUGIN.KEY=VALUE",
        help="An option for a (third-party) plugin. Repeatable.",
    ),
]


def spec_options(command: F) -> F:
    """Add the job-spec flags to a click command; pass their values on to :func:`build_spec`."""
    for option in reversed(_SPEC_FLAGS):
        command = option(command)
    return command


def _merge_io(flags: dict[str, Iterable[tuple[str, int]]]) -> list[IOLimit]:
    """One IOLimit per device, in the order devices were first named."""
    per_device: dict[str, dict[str, int]] = {}
    for flag, field in _IO_FLAGS.items():
        for device, amount in flags.get(flag) or ():
            caps = per_device.setdefault(device, {})
            if field in caps and caps[field] != amount:
                raise click.BadParameter(
                    f"{device} is given twice ({caps[field]} and {amount})",
                    param_hint=f"--{flag.replace('_', '-')}",
                )
            caps[field] = amount
    return [IOLimit(device=device, **caps) for device, caps in per_device.items()]


def _check_cwd(cwd: str | None) -> str:
    if cwd is None:
        return "/"
    if not cwd.startswith("/"):
        # The directory is on the host that runs the job, which may not be this one: resolving
        # it against our own cwd would silently name another directory.
        raise click.BadParameter(f"must be an absolute path, got {cwd!r}", param_hint="--cwd")
    return cwd


def build_spec(
    command: str,
    args: Sequence[str] = (),
    *,
    memory: int | None = None,
    memory_high: int | None = None,
    cpus: float | None = None,
    cpu_weight: int | None = None,
    io_weight: int | None = None,
    io_read_bps: Iterable[tuple[str, int]] = (),
    io_write_bps: Iterable[tuple[str, int]] = (),
    io_read_iops: Iterable[tuple[str, int]] = (),
    io_write_iops: Iterable[tuple[str, int]] = (),
    pids: int | None = None,
    env: Iterable[tuple[str, str]] = (),
    cwd: str | None = None,
    timeout: float | None = None,
    uid: int | None = None,
    gid: int | None = None,
    options: Iterable[tuple[str, str]] = (),
) -> JobSpec:
    """The :class:`JobSpec` for ``command`` and the parsed values of :func:`spec_options`.

    Raises :class:`click.BadParameter` naming the flag for anything the model refuses. A
    repeated ``-e``/``-o`` key takes its last value, as in a shell; a device given twice for the
    same IO cap with different values is an error.
    """
    try:
        io = _merge_io(
            {
                "io_read_bps": io_read_bps,
                "io_write_bps": io_write_bps,
                "io_read_iops": io_read_iops,
                "io_write_iops": io_write_iops,
            }
        )
        return JobSpec(
            command=command,
            args=tuple(args),
            env=dict(env),
            cwd=_check_cwd(cwd),
            limits=Limits(
                memory_max=memory,
                memory_high=memory_high,
                cpu=cpus,
                cpu_weight=cpu_weight,
                io_weight=io_weight,
                io=io,
                pids_max=pids,
            ),
            isolation=Isolation(uid=uid, gid=gid),
            timeout=timeout,
            options=dict(options),
        )
    except InvalidSpec as exc:
        flag = _FLAG_FOR_FIELD.get(exc.field)
        raise click.BadParameter(exc.problem if flag else str(exc), param_hint=flag) from None
