"""The spawn plan: a declarative description of how to start one job's process.

``pre_spawn`` hooks fill it in; the launcher applies it in the child between ``fork`` and
``execve``. Plugins never run code in the child, so everything a plugin needs done there must
be expressible as data here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

#: Namespace names a plan may request, as the launcher understands them.
NAMESPACES = frozenset({"net", "pid", "mount", "ipc", "uts"})

#: Linux capability names (without ``CAP_``), in the order of their numbers
#: (``linux/capability.h``).
# fmt: off
_CAPABILITY_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN",
    "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
# fmt: on
#: Capability name -> number.
CAPABILITIES: Mapping[str, int] = {name: n for n, name in enumerate(_CAPABILITY_NAMES)}


def capability_numbers(names: Iterable[str]) -> list[int]:
    """The numbers of capability ``names`` (``"SYS_ADMIN"`` or ``"CAP_SYS_ADMIN"``, any case).

    Raises ValueError naming every unknown one.
    """
    numbers: set[int] = set()
    unknown: list[str] = []
    for name in names:
        key = name.upper().removeprefix("CAP_")
        if key in CAPABILITIES:
            numbers.add(CAPABILITIES[key])
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"unknown capabilities {unknown} (known: {', '.join(sorted(CAPABILITIES))})"
        )
    return sorted(numbers)


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
    - ``capabilities``: None leaves the capability sets alone; a collection of names
      (``"KILL"`` or ``"CAP_KILL"``) is all the job may ever hold: every other capability is
      dropped from the bounding set, the effective and permitted sets are cut to these, and
      the inheritable and ambient sets are cleared. A root job then holds only these after
      ``execve``; an unprivileged one holds none and can gain none of the rest.
    - ``readonly_paths``: made read-only, with every mount below them, inside the job's
      private mount namespace (implied: the host's mounts are never touched). ``/sys`` and
      ``/proc/sys`` keep a root job out of cgroup files and kernel settings. A path that
      does not exist is skipped.
    - ``no_new_privileges``: ``PR_SET_NO_NEW_PRIVS``; setuid and file capabilities of
      programs the job runs grant nothing.
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
    capabilities: set[str] | None = None
    readonly_paths: list[str] = attrs.Factory(list)
    no_new_privileges: bool = False

    #: Validate capability names before any job (a plugin's configuration): their numbers,
    #: or ValueError naming the unknown ones. See :func:`capability_numbers`.
    capability_numbers = staticmethod(capability_numbers)

    def to_message(self) -> dict[str, Any]:
        """The plain-JSON form sent to the launcher."""
        unknown = self.namespaces - NAMESPACES
        if unknown:
            raise ValueError(f"unknown namespaces in spawn plan: {sorted(unknown)}")
        relative = [p for p in self.readonly_paths if not p.startswith("/")]
        if relative:
            raise ValueError(f"readonly_paths must be absolute, got {relative}")
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
            "capabilities": (
                None if self.capabilities is None else capability_numbers(self.capabilities)
            ),
            # Order kept, duplicates dropped: a path below another is remounted after it.
            "readonly_paths": list(dict.fromkeys(self.readonly_paths)),
            "no_new_privileges": self.no_new_privileges,
        }
