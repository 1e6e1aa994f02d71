"""What a set of processes uses now, from /proc: for a job outside the hierarchy that would say.

A v1 job with no memory or CPU limit is not put in the memory or cpuacct hierarchy (see
``hierarchies`` in :class:`~.config.CgroupsConfig`); its live usage is then the sum over the
processes of its cgroup: resident memory (RSS, what ``ps`` and ``top`` show; pages shared
between them are counted in each) and CPU time, their own and that of the children they
waited for. A process that exits between the listing and the read is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import attrs

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Fields of /proc/<pid>/stat after the ")" that ends the command name (which may itself hold
# spaces and parentheses), counted from the state, field 3 of proc(5): utime, stime, cutime
# and cstime are fields 14-17, rss field 24.
_UTIME, _CSTIME, _RSS = 14 - 3, 17 - 3, 24 - 3


@attrs.frozen
class ProcessUsage:
    """CPU seconds and resident bytes summed over the processes that could be read."""

    cpu_seconds: float
    rss_bytes: int


def usage(pids: Iterable[int]) -> ProcessUsage | None:
    """The summed usage of ``pids``; None if none of them could be read."""
    ticks = 0
    pages = 0
    seen = False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                text = f.read()
            fields = text[text.rindex(b")") + 2 :].split()
            ticks += sum(int(value) for value in fields[_UTIME : _CSTIME + 1])
            pages += int(fields[_RSS])
        except (OSError, ValueError, IndexError):
            continue
        seen = True
    if not seen:
        return None
    return ProcessUsage(cpu_seconds=ticks / _TICKS, rss_bytes=pages * _PAGE)
