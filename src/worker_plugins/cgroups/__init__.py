"""The ``cgroups`` plugin: one control group per job, its limits, whole-job signals and facts.

Modules, one job each:

- :mod:`.config` — the ``[plugins.cgroups]`` section.
- :mod:`.detect` — which layout the host has (unified v2, hybrid, legacy v1).
- :mod:`.limits` — :class:`~worker_core.Limits` translated into interface-file writes.
- :mod:`.fs` — reading and writing cgroup files, bounded waits.
- :mod:`.backend` — the interface both backends implement, and what they share.
- :mod:`.v1` / :mod:`.v2` — the two backends.
- :mod:`.plugin` — the hook implementations.
"""
