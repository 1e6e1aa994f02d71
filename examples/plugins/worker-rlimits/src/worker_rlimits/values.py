"""The resources this plugin offers and the syntax of their values.

A value is one amount (soft and hard limit alike, as ``ulimit -n 1024`` sets both), or
``SOFT:HARD``. An amount is a whole number, ``unlimited``, or for byte sizes a number with a
``K``, ``M``, ``G`` or ``T`` suffix (powers of 1024)::

    "1024"          soft = hard = 1024
    "1024:4096"     soft 1024, hard 4096
    "512M"          soft = hard = 512 MiB (byte-sized resources only)
    "unlimited"     no limit
    "60:unlimited"  soft 60, no hard limit

One amount sets both limits, so the job cannot raise its soft limit; for ``cpu`` it also
means the kernel's SIGKILL with no SIGXCPU warning first (give ``"60:65"`` for a warning).

Errors are ``ValueError`` with a message written for the user; the plugin adds the field name.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import attrs

#: How an unlimited amount travels in a spawn plan (``SpawnPlan.rlimits``).
UNLIMITED = -1

#: The largest finite amount accepted. ``rlim_t`` is 64-bit unsigned, but values at the top of
#: its range collide with ``RLIM_INFINITY``; nothing real needs more than this.
MAX_AMOUNT = 2**62

_UNLIMITED_WORDS = frozenset({"unlimited", "infinity"})
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AMOUNT = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)


class Unit(enum.Enum):
    """What a resource's amount counts, which decides the accepted syntax."""

    COUNT = "count"
    BYTES = "bytes"
    SECONDS = "seconds"


@attrs.frozen
class Resource:
    """One limit this plugin can set: its option key, the kernel's name and its unit."""

    key: str  # the option is "rlimits.<key>", the config key is "<key>"
    rlimit: str  # the ``resource`` module's name, as ``SpawnPlan.rlimits`` wants it
    unit: Unit
    minimum: int = 0  # smallest finite soft limit accepted
    summary: str = ""


#: Every resource a job may limit, by option key. ``nproc`` is left out on purpose: it counts
#: every process of the job's *user*, not of the job, and the kernel does not apply it to root,
#: so it would read like a per-job limit and not be one (use ``limits.pids_max`` with cgroups).
RESOURCES: Mapping[str, Resource] = {
    r.key: r
    for r in (
        Resource("nofile", "RLIMIT_NOFILE", Unit.COUNT, summary="open file descriptors"),
        Resource("core", "RLIMIT_CORE", Unit.BYTES, summary="core dump size"),
        Resource(
            "cpu",
            "RLIMIT_CPU",
            Unit.SECONDS,
            minimum=1,
            summary="CPU seconds (SIGXCPU, then SIGKILL)",
        ),
        Resource("as", "RLIMIT_AS", Unit.BYTES, summary="virtual address space"),
        Resource("fsize", "RLIMIT_FSIZE", Unit.BYTES, summary="size of a file the job writes"),
    )
}


def parse_amount(resource: Resource, text: str) -> int:
    """One amount: a whole number (with a size suffix for bytes) or ``unlimited``."""
    word = text.strip()
    if word.lower() in _UNLIMITED_WORDS:
        return UNLIMITED
    match = _AMOUNT.fullmatch(word)
    if match is None:
        example = "'512M'" if resource.unit is Unit.BYTES else "'1024'"
        raise ValueError(
            f"{text!r} is not a {resource.unit.value} amount (e.g. {example} or 'unlimited')"
        )
    number, suffix = match.groups()
    if suffix and resource.unit is not Unit.BYTES:
        raise ValueError(
            f"{text!r}: size suffixes are for byte amounts; {resource.key} counts {resource.unit.value}"
        )
    amount = int(number) * _SUFFIXES[suffix.upper()]
    if amount > MAX_AMOUNT:
        raise ValueError(f"{text!r} is too large (at most {MAX_AMOUNT}, or 'unlimited')")
    return amount


def parse_limit(resource: Resource, text: str) -> tuple[int, int]:
    """``"N"`` or ``"SOFT:HARD"`` into ``(soft, hard)``, with :data:`UNLIMITED` for no limit."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string such as '1024' or '1024:4096', got {text!r}")
    soft_text, sep, hard_text = text.partition(":")
    soft = parse_amount(resource, soft_text)
    hard = parse_amount(resource, hard_text) if sep else soft
    if exceeds(soft, hard):
        raise ValueError(
            f"the soft limit ({soft_text.strip()}) is above the hard limit ({hard_text.strip()})"
        )
    if soft != UNLIMITED and soft < resource.minimum:
        raise ValueError(f"must be at least {resource.minimum}, got {soft}")
    return soft, hard


def exceeds(amount: int, bound: int) -> bool:
    """Whether ``amount`` is above ``bound``, where :data:`UNLIMITED` is above everything."""
    if bound == UNLIMITED:
        return False
    return amount == UNLIMITED or amount > bound


def stricter(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The tighter of two ``(soft, hard)`` pairs, limit by limit."""
    soft = a[0] if exceeds(b[0], a[0]) else b[0]
    hard = a[1] if exceeds(b[1], a[1]) else b[1]
    # min() on each side keeps soft <= hard: both inputs satisfy it.
    return soft, hard


def format_limit(limit: tuple[int, int]) -> str:
    """The inverse of :func:`parse_limit`, for messages."""

    def one(amount: int) -> str:
        return "unlimited" if amount == UNLIMITED else str(amount)

    soft, hard = limit
    return one(soft) if soft == hard else f"{one(soft)}:{one(hard)}"
