"""What the directories under an engine's parent are called: job cgroups and pool entries.

A job cgroup is named by its job id (the engine's ids are 32 hex digits), so it is found
again from the id alone, after a crash too. A pool entry, a cgroup made ahead of any job, is
``pool-<random>``: the ``-`` and the letters outside hex keep it apart from every engine id,
and :func:`check_job_id` refuses a job id with the prefix, so the two can never be confused.
"""

from __future__ import annotations

import secrets

from . import fs

#: The prefix of every pool entry's name.
POOL_PREFIX = "pool-"


def new_pool_name() -> str:
    """A fresh pool entry name; random, so a crashed run's entries are never taken for ours."""
    return f"{POOL_PREFIX}{secrets.token_hex(6)}"


def is_pool_name(name: str) -> bool:
    """Whether ``name``, under the parent, is a pool entry (ours or a crashed run's)."""
    return name.startswith(POOL_PREFIX)


def check_job_id(job_id: str) -> None:
    """Raise :class:`~.fs.CgroupError` unless ``job_id`` can name a job cgroup."""
    # The id becomes a directory name; anything else would escape the parent.
    if not job_id or "/" in job_id or job_id in {".", ".."} or "\0" in job_id:
        raise fs.CgroupError(f"job id {job_id!r} cannot name a cgroup")
    if is_pool_name(job_id):
        raise fs.CgroupError(
            f"job id {job_id!r} cannot name a cgroup: {POOL_PREFIX}* names the ready pool"
        )
