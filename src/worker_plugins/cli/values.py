"""The values the command line's flags take, each parsed by a click type: sizes (``64M``),
durations (``30s``, ``1h30m``), times (``10m`` from now or ago, an ISO time), ``KEY=VALUE``
pairs and per-device IO rates.

A bad value is a usage error naming the flag (``Invalid value for '--memory': ...``) before
anything is sent anywhere. Plain parsing only, no model: every ``worker job`` command imports
this for its flags (the job-spec flags themselves are :mod:`.spec_options`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

_SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DEVICE_NUMBERS_RE = re.compile(r"\d+:\d+")


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


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|[smhdw])")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def parse_duration(text: str) -> float | None:
    """Seconds in ``90s``, ``30m``, ``2h``, ``7d``, ``1w``, ``500ms`` or a sum of them
    (``1h30m``); None if ``text`` is not one. A bare number is not (see :class:`DurationType`,
    which reads it as seconds)."""
    text = text.strip().lower()
    if not text or _DURATION_PART.sub("", text):
        return None
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


class DurationType(click.ParamType[float]):
    """A length of time in seconds: ``30s``, ``5m``, ``1h30m``, ``500ms``, or a bare number of
    seconds (``30``, ``2.5``). ``allow_zero`` accepts ``0`` (a grace period of none)."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip()
            found = float(text) if _PLAIN_NUMBER.fullmatch(text) else parse_duration(text)
            if found is None:
                self.fail(
                    f"{value!r} is not a duration (examples: 30s, 5m, 1h30m, 500ms, 90)",
                    param,
                    ctx,
                )
            seconds = found
        if seconds < 0:
            self.fail(f"{value!r} must not be negative", param, ctx)
        if seconds == 0 and not self.allow_zero:
            self.fail(f"{value!r} must be more than 0 seconds", param, ctx)
        return seconds


def parse_begin(text: str, now: float | None = None) -> float:
    """``--begin``: a duration from ``now`` (``10m``: in ten minutes) or an ISO 8601 time
    (``2024-05-01T02:00``, local unless it has an offset), in seconds since the epoch.
    ``ValueError`` with a message for the user for anything else."""
    now = time.time() if now is None else now
    text = text.strip()
    seconds = float(text) if _PLAIN_NUMBER.fullmatch(text) else parse_duration(text)
    if seconds is not None:
        return now + seconds
    return iso_time(
        text,
        "a duration from now (30s, 10m, 2h, 1d) nor an ISO time "
        "(2024-05-01T02:00, 2024-05-01T02:00:00+02:00)",
    )


def iso_time(text: str, instead: str) -> float:
    """An ISO 8601 time (local unless it has an offset) in seconds since the epoch;
    ``ValueError`` saying ``text`` is neither ``instead`` otherwise."""
    try:
        when = datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{text!r} is neither {instead}") from None
    if when < 0:
        raise ValueError(f"{text!r} is before 1970")
    return when


class TimeType(click.ParamType[float]):
    """A point in time parsed by ``parse`` (a duration from now or ago, or an ISO time); a
    ``ValueError`` it raises is the usage error."""

    name = "when"

    def __init__(self, parse: Callable[[str], float]) -> None:
        self._parse = parse

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return self._parse(str(value))
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
#: A positive duration (``--timeout``); :data:`GRACE` also takes 0.
DURATION = DurationType()
GRACE = DurationType(allow_zero=True)
BEGIN = TimeType(parse_begin)
ENV_PAIR = PairType("K=V", _env_name_problem)
OPTION_PAIR = PairType("PLUGIN.KEY=VALUE", _option_name_problem)
IO_BPS = IORateType("bytes")
IO_IOPS = IORateType("iops")
