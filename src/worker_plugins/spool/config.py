"""The plugin's configuration section, ``[plugins.spool]``."""

from __future__ import annotations

from typing import Any

import attrs

MIB = 1 << 20
GIB = 1 << 30


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _read_size(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 4096 <= value <= 64 * MIB:
        raise ValueError(
            f"{attribute.name} must be an integer from 4096 to {64 * MIB} bytes, got {value!r}"
        )


@attrs.frozen
class SpoolConfig:
    """Settings of the ``spool`` plugin."""

    #: Bytes of output (both streams) kept per job; past it the rest is not written, the
    #: loss is recorded on the job (fact output_lost_bytes) and the job keeps running. 0: no
    #: quota. The default (64 GiB) is far above any log a person reads, and stops one runaway
    #: job from filling the state directory's disk for every other job and for the records.
    max_bytes_per_job: int = attrs.field(default=64 * GIB, validator=_non_negative)
    #: Bytes a follower reads from the files per read at most (one batch of chunks).
    read_chunk_bytes: int = attrs.field(default=4 * MIB, validator=_read_size)
