"""The ``cgroups`` plugin: one control group per job, its limits, whole-job signals and facts.

Modules, one job each:

- :mod:`.config` — the ``[plugins.cgroups]`` section.
- :mod:`.detect` — which layout the host has (unified v2, hybrid, legacy v1).
- :mod:`.limits` — :class:`~worker_core.Limits` translated into interface-file writes.
- :mod:`.fs` — reading and writing cgroup files, bounded waits.
- :mod:`.names` — what the directories under the parent are called (jobs, pool entries).
- :mod:`.backend` — the interface both backends implement, and what they share.
- :mod:`.v1` / :mod:`.v2` — the two backends.
- :mod:`.procfs` — live usage of a job's processes, for a job outside the memory or
  cpuacct hierarchy.
- :mod:`.pool` — ready cgroups, made ahead of the jobs that take them.
- :mod:`.housekeeper` — the thread that removes ended jobs' cgroups and refills the pool.
- :mod:`.parent_lock` — one engine per parent.
- :mod:`.plugin` — the hook implementations.
"""
