"""The spawn plan: a declarative description of how to start one job's process.

``pre_spawn`` hooks fill it in; the launcher applies it in the child between ``fork`` and
``execve``. Plugins never run code in the child, so everything a plugin needs done there must
be expressible as data here.
"""

from __future__ import annotations

from typing import Any

import attrs

#: Namespace names a plan may request, as the launcher understands them.
NAMESPACES = frozenset({"net", "pid", "mount", "ipc", "uts"})


@attrs.define
class SpawnPlan:
    """Mutable during ``pre_spawn``; frozen into a message for the launcher afterwards.

    - ``executable`` is the absolute path exec'd; ``argv[0]`` is what the job sees.
    - ``env`` is the job's complete environment: nothing from the server leaks in.
    - ``cgroup_procs`` are ``cgroup.procs`` files the child writes itself into before exec,
      so it never runs outside its cgroups. The launcher also uses them to kill whatever is
      left in those cgroups if the engine dies.
    - ``namespaces`` are created with ``unshare`` in the child; ``"pid"`` makes the job PID 1
      of a new PID namespace (with a private mount namespace and a fresh ``/proc``).
    - ``rlimits`` maps a ``resource.RLIMIT_*`` name (``"RLIMIT_NOFILE"``) to ``(soft, hard)``;
      ``-1`` means unlimited.
    - ``uid``/``gid``/``groups``: identity switched to just before exec.
    """

    executable: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    cgroup_procs: list[str] = attrs.Factory(list)
    namespaces: set[str] = attrs.Factory(set)
    rlimits: dict[str, tuple[int, int]] = attrs.Factory(dict)
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    no_new_privileges: bool = False

    def to_message(self) -> dict[str, Any]:
        """The plain-JSON form sent to the launcher."""
        unknown = self.namespaces - NAMESPACES
        if unknown:
            raise ValueError(f"unknown namespaces in spawn plan: {sorted(unknown)}")
        return {
            "executable": self.executable,
            "argv": list(self.argv),
            "env": dict(self.env),
            "cwd": self.cwd,
            "cgroup_procs": list(self.cgroup_procs),
            "namespaces": sorted(self.namespaces),
            "rlimits": {k: list(v) for k, v in self.rlimits.items()},
            "uid": self.uid,
            "gid": self.gid,
            "groups": self.groups,
            "no_new_privileges": self.no_new_privileges,
        }
