"""What the cluster enforces, read from ``scontrol show config`` when the executor starts.

A limit the cluster would only schedule by, not enforce, is refused at submit: a job with
``--mem`` on a cluster without memory confinement could use all of a node's memory, and a
limit is never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen
class ClusterCapabilities:
    """The parts of the cluster's configuration the executor depends on."""

    version: str
    #: Why memory limits are not enforced, or None if they are.
    memory_refusal: str | None
    #: Why CPU counts are not enforced, or None if they are.
    cpu_refusal: str | None
    #: sacct can answer for jobs squeue has forgotten.
    accounting: bool

    @classmethod
    def from_config(cls, values: Mapping[str, str]) -> ClusterCapabilities:
        task = values.get("TaskPlugin", "")
        cgroup_task = "task/cgroup" in task
        gather = values.get("JobAcctGatherType", "jobacct_gather/none")
        over_memory_kill = "OverMemoryKill" in values.get("JobAcctGatherParams", "") and (
            gather != "jobacct_gather/none"
        )
        # With memory not a consumable resource (SelectTypeParameters=CR_CPU...), Slurm
        # records no memory allocation for a job and confines nothing, whatever --mem says.
        select = values.get("SelectTypeParameters", "")
        consumable = "MEMORY" in select.upper()
        confined = cgroup_task and values.get("ConstrainRAMSpace", "no").lower() == "yes"
        memory_refusal = None
        if not (consumable and (confined or over_memory_kill)):
            memory_refusal = (
                "the Slurm cluster does not enforce memory limits (that needs memory as a "
                "consumable resource, SelectTypeParameters=CR_*_Memory, and "
                "TaskPlugin=task/cgroup with ConstrainRAMSpace=yes in cgroup.conf or "
                "JobAcctGatherParams=OverMemoryKill; it has "
                f"SelectTypeParameters={select or 'none'}, TaskPlugin={task or 'none'})"
            )
        cpu_refusal = None
        if not (
            (cgroup_task and values.get("ConstrainCores", "no").lower() == "yes")
            or "task/affinity" in task
        ):
            cpu_refusal = (
                "the Slurm cluster does not confine jobs to their CPUs (that needs "
                "TaskPlugin=task/cgroup with ConstrainCores=yes in cgroup.conf, or "
                f"task/affinity; it has TaskPlugin={task or 'none'})"
            )
        storage = values.get("AccountingStorageType", "accounting_storage/none")
        return cls(
            version=values.get("SLURM_VERSION", "unknown"),
            memory_refusal=memory_refusal,
            cpu_refusal=cpu_refusal,
            accounting=storage != "accounting_storage/none",
        )
