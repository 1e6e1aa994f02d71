"""Namespace isolation plugins: ``netns``, ``pidns`` and ``mntns``.

Each one only declares namespaces in the spawn plan; the launcher creates them in the child
before ``execve``, so the job never runs outside them.

- ``netns``: a private network namespace holding only ``lo``, brought up. The job cannot
  reach any listener of the host, loopback included.
- ``pidns``: the job is PID 1 of a new PID namespace with a private mount namespace and a
  fresh ``/proc``; it sees only its own processes, and when it exits every process in the
  namespace is killed by the kernel. Like any PID 1, it ignores SIGTERM unless it installs a
  handler, so a stop of a job that does not reaches SIGKILL after the grace period.
- ``mntns``: a private mount namespace (mounts made by the job do not leak to the host) in
  which ``/sys`` and ``/proc/sys`` are read-only, submounts included: a job cannot write a
  cgroup file (leave its cgroup, raise its limits) or a kernel setting there, even as root.
  A root job holding ``CAP_SYS_ADMIN`` could remount them; ``runas`` takes it away.
"""

from __future__ import annotations

from worker_core.plugin import Job, SpawnPlan, hookimpl


class _NamespacePlugin:
    #: It acts between fork and exec on this host: refused beside another executor.
    local_only = True
    namespaces: frozenset[str] = frozenset()
    readonly_paths: tuple[str, ...] = ()

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        plan.namespaces.update(self.namespaces)
        plan.readonly_paths.extend(p for p in self.readonly_paths if p not in plan.readonly_paths)


class NetworkNamespace(_NamespacePlugin):
    """``netns``: every job gets its own network namespace with only loopback."""

    namespaces = frozenset({"net"})


class PidNamespace(_NamespacePlugin):
    """``pidns``: every job is PID 1 of its own PID namespace, with a fresh ``/proc``."""

    namespaces = frozenset({"pid", "mount"})


class MountNamespace(_NamespacePlugin):
    """``mntns``: every job gets a private mount namespace, with /sys and /proc/sys read-only."""

    namespaces = frozenset({"mount"})
    readonly_paths = ("/sys", "/proc/sys")
