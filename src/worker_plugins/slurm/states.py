"""Slurm's job states, as the engine needs them: still active, or how the job ended.

Exit statuses are the batch script's raw wait status (``squeue -O exit_code``): the batch
script ``exec``s the job's command, so that is the command's own status.
"""

from __future__ import annotations

import signal

from worker_core.plugin import Ended

from .commands import JobStatus

#: States after which the node's processes are gone but their output may be incomplete.
NODE_LOST = frozenset({"NODE_FAIL", "BOOT_FAIL"})
#: States in which Slurm has finished with the job.
FINISHED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "DEADLINE",
        "PREEMPTED",
        "REVOKED",
        *NODE_LOST,
    }
)


def is_finished(status: JobStatus) -> bool:
    """True once Slurm has finished with the job. A state this module does not know counts
    as active: a later poll sees the final one."""
    return status.state in FINISHED


def ended(status: JobStatus) -> Ended:
    """How a finished job ended, with Slurm's own words as facts."""
    facts: dict[str, str] = {"slurm_job_id": status.slurm_id, "slurm_state": status.state}
    if status.nodes:
        facts["slurm_nodes"] = status.nodes
    if status.reason and status.reason != "None":
        facts["slurm_reason"] = status.reason
    raw = status.exit_status or 0
    sig, code = raw & 0x7F, (raw >> 8) & 0xFF
    if status.state == "OUT_OF_MEMORY":
        # The cgroup's OOM killer ended it; Slurm's exit status for it is not a wait status.
        return Ended(signal=signal.SIGKILL, oom_killed=True, facts=facts)
    if status.state in NODE_LOST:
        return Ended(
            lost=f"Slurm ended job {status.slurm_id} as {status.state}: its node failed",
            facts=facts,
        )
    if sig:
        return Ended(signal=sig, facts=facts)
    if status.state == "COMPLETED" or code:
        return Ended(exit_code=code, facts=facts)
    if status.state == "FAILED":
        reason = facts.get("slurm_reason", "no reason given")
        return Ended(
            lost=f"Slurm failed job {status.slurm_id} without an exit status ({reason})",
            facts=facts,
        )
    # Cancelled, timed out, preempted... before any status was recorded (still pending, or
    # killed by Slurm's own escalation): Slurm's last word to a job is SIGKILL.
    return Ended(signal=signal.SIGKILL, facts=facts)
