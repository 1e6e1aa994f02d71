"""A job spec and its spawn plan as Slurm sees them: sbatch options, a batch script and an
environment; and which spec fields the executor can enforce through Slurm.

- ``limits.memory_max`` -> ``--mem=<MiB>M``, rounded **up** to a whole MiB (Slurm counts
  memory in MiB): the job may use up to 1 MiB less one byte more than asked.
- ``limits.cpu`` (a fraction of cores) -> ``--cpus-per-task``, rounded **up** to whole CPUs
  (Slurm allocates whole CPUs): ``0.5`` gets one CPU.
- ``timeout`` -> ``--time`` in minutes, rounded **up** (Slurm's granularity). The engine's own
  timer still stops the job at the exact second; Slurm's limit is the backstop for when the
  worker is not running.
- the environment -> exactly the plan's (the spec's, with PATH and WORKER_JOB_ID), from a
  NUL-separated ``--export-file``, so values may hold commas, quotes and newlines; nothing of
  the server's environment. Slurm adds its own per-job variables (``SLURM_*``,
  ``HOSTNAME``, ``ENVIRONMENT=BATCH``, and ``TMPDIR`` unless the job sets it).
- the working directory -> ``--chdir``; the name -> ``--job-name`` (``worker-<id>`` if unset);
  stdout and stderr -> ``OUTPUT_DIR/<job id>.out`` / ``.err``, appended (never truncated).
- ``--no-requeue``: a job runs at most once, as it would here; ``--comment=worker:<id>``
  names the worker's job in Slurm's listings.

The batch script ``exec``s the command, so the batch step *is* the job's process: its exit
status is the job's, and signals reach it directly. ``argv[0]`` is the executable's path
(``/bin/sh`` cannot set another). Every other limit is refused (see :data:`REFUSED`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from worker_core.plugin import InvalidSpec, Job, JobSpec, SpawnPlan

from .capabilities import ClusterCapabilities
from .config import SlurmConfig

MIB = 1 << 20

#: The spec fields the executor enforces through Slurm (on a cluster that enforces them).
CLAIMED = ("limits.memory_max", "limits.cpu")

#: Spec fields Slurm has no way to enforce per job, and why.
REFUSED: Mapping[str, str] = {
    "limits.memory_high": "Slurm has no soft memory threshold per job",
    "limits.cpu_weight": "Slurm has no per-job CPU weight (use a partition or QOS priority)",
    "limits.io_weight": "Slurm does not limit a job's IO",
    "limits.io": "Slurm does not limit a job's IO",
    "limits.pids_max": "Slurm has no per-job process cap",
    "isolation.uid": "Slurm runs every job as the user the server submits as",
    "isolation.gid": "Slurm runs every job as the user the server submits as",
}


def check_spec(spec: JobSpec, capabilities: ClusterCapabilities | None) -> list[str]:
    """Refuse what the executor cannot enforce (:class:`InvalidSpec` naming the field);
    the fields it claims."""
    for field in [*spec.limits.set_fields(), *spec.isolation.set_fields()]:
        why = REFUSED.get(field)
        if why is not None:
            raise InvalidSpec(field, f"the slurm executor cannot enforce it: {why}")
    for key in spec.options:
        if key.startswith("slurm."):
            raise InvalidSpec(f"options.{key}", "the slurm executor takes no per-job options")
    wanted = [
        (spec.limits.memory_max, "limits.memory_max", "memory"),
        (spec.limits.cpu, "limits.cpu", "cpu"),
    ]
    for value, field, kind in wanted:
        if value is None:
            continue
        if capabilities is None:
            raise InvalidSpec(field, "the slurm executor has not reached the cluster yet")
        refusal = capabilities.memory_refusal if kind == "memory" else capabilities.cpu_refusal
        if refusal is not None:
            raise InvalidSpec(field, refusal)
    return list(CLAIMED)


def check_plan(plan: SpawnPlan) -> None:
    """Refuse a plan that asks for what only this host's launcher can do (another plugin
    filled it: netns, runas, rlimits...): :class:`ValueError` saying what and from where."""
    asked: dict[str, Sequence[object]] = {
        "namespaces": sorted(plan.namespaces),
        "cgroups to join": plan.cgroup_procs,
        "rlimits": sorted(plan.rlimits),
        "a uid or gid": [v for v in (plan.uid, plan.gid) if v is not None],
        "supplementary groups": plan.groups or [],
        "capabilities": [] if plan.capabilities is None else ["set"],
        "read-only paths": plan.readonly_paths,
        "no_new_privileges": ["set"] if plan.no_new_privileges else [],
    }
    wanted = [f"{what} ({', '.join(map(str, values))})" for what, values in asked.items() if values]
    if wanted:
        raise ValueError(
            "the spawn plan asks for " + "; ".join(wanted) + ", which a plugin for this "
            "host's launcher filled in: Slurm's nodes cannot apply them (disable that plugin)"
        )


def memory_mib(size: int) -> int:
    """Bytes as whole MiB, rounded up."""
    return max(1, -(-size // MIB))


def cpu_count(fraction: float) -> int:
    """A fraction of cores as whole CPUs, rounded up."""
    return max(1, math.ceil(fraction))


def time_minutes(seconds: float) -> int:
    """Seconds as whole minutes, rounded up."""
    return max(1, math.ceil(seconds / 60))


def output_paths(output_dir: Path, job_id: str) -> tuple[Path, Path]:
    """Where job ``job_id`` writes its stdout and stderr."""
    return output_dir / f"{job_id}.out", output_dir / f"{job_id}.err"


def sbatch_options(job: Job, plan: SpawnPlan, config: SlurmConfig, output_dir: Path) -> list[str]:
    """sbatch's options for ``job`` (besides ``--parsable`` and ``--export-file``)."""
    spec = job.spec
    out, err = output_paths(output_dir, job.id)
    options = [
        f"--job-name={spec.name or 'worker-' + job.id[:12]}",
        f"--output={out}",
        f"--error={err}",
        "--open-mode=append",
        f"--chdir={plan.cwd}",
        "--no-requeue",
        f"--comment=worker:{job.id}",
    ]
    if spec.limits.memory_max is not None:
        options.append(f"--mem={memory_mib(spec.limits.memory_max)}M")
    if spec.limits.cpu is not None:
        options.append(f"--cpus-per-task={cpu_count(spec.limits.cpu)}")
    if spec.timeout is not None:
        options.append(f"--time={time_minutes(spec.timeout)}")
    for flag, value in (
        ("--partition", config.partition),
        ("--account", config.account),
        ("--qos", config.qos),
    ):
        if value is not None:
            options.append(f"{flag}={value}")
    return options


def _quoted(word: str) -> bytes:
    raw = word.encode("utf-8", "surrogateescape")
    return b"'" + raw.replace(b"'", b"'\\''") + b"'"


def batch_script(job: Job, plan: SpawnPlan) -> bytes:
    """A ``/bin/sh`` batch script that ``exec``s the plan's command with its arguments."""
    words = [plan.executable, *plan.argv[1:]]
    return (
        b"#!/bin/sh\n# worker job "
        + job.id.encode()
        + b"\nexec "
        + b" ".join(_quoted(w) for w in words)
        + b"\n"
    )


def environment(env: Mapping[str, str]) -> bytes:
    """``env`` as ``--export-file`` reads it: ``NAME=value`` entries, each ended by NUL."""
    return b"".join(_entry(k, v) for k, v in env.items())


def _entry(key: str, value: str) -> bytes:
    return (
        key.encode("utf-8", "surrogateescape")
        + b"="
        + value.encode("utf-8", "surrogateescape")
        + b"\0"
    )
