"""The plugin's configuration section, ``[plugins.slurm]``."""

from __future__ import annotations

from typing import Any

import attrs


def _optional_name(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not value or not value.isprintable() or any(c in value for c in " ,\t"):
        raise ValueError(
            f"{attribute.name} must be one Slurm name (no spaces or commas), got {value!r}"
        )


def _optional_path(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not value or "\0" in value):
        raise ValueError(f"{attribute.name} must be a path, got {value!r}")


def _interval(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.01 <= value <= 3600:
        raise ValueError(f"{attribute.name} must be from 0.01 to 3600 seconds, got {value}")


@attrs.frozen
class SlurmConfig:
    """Settings of the ``slurm`` executor."""

    #: Partition every job is submitted to (sbatch --partition); unset: the cluster's default.
    partition: str | None = attrs.field(default=None, validator=_optional_name)
    #: Account jobs are charged to (sbatch --account); unset: the submitting user's default.
    account: str | None = attrs.field(default=None, validator=_optional_name)
    #: Quality of service of every job (sbatch --qos); unset: the association's default.
    qos: str | None = attrs.field(default=None, validator=_optional_name)
    #: Directory the jobs write their stdout and stderr to (JOB.out, JOB.err), followed from
    #: there into the worker's own output store. It must be readable here and writable on
    #: every node (on a multi-host cluster: a shared file system). Unset: slurm-output under
    #: the state directory (then a state directory is required).
    output_dir: str | None = attrs.field(default=None, validator=_optional_path)
    #: Seconds between status queries (one squeue for every active job).
    poll_interval: float = attrs.field(default=1.0, validator=_interval)
    #: Seconds between reads of a job's output files while they grow (backs off to
    #: poll_interval for a job whose files do not grow).
    output_interval: float = attrs.field(default=0.1, validator=_interval)
    #: Directory holding sbatch, squeue, scancel, scontrol and sacct; unset: the server's
    #: PATH, then /usr/bin and /usr/local/bin.
    bin_dir: str | None = attrs.field(default=None, validator=_optional_path)
    #: The cluster's slurm.conf, passed to every command as SLURM_CONF; unset: the server's
    #: SLURM_CONF if it has one, else Slurm's default (/etc/slurm/slurm.conf).
    slurm_conf: str | None = attrs.field(default=None, validator=_optional_path)
    #: Seconds a Slurm command may take before it counts as failed (slurmctld unreachable).
    command_timeout: float = attrs.field(default=30.0, validator=_interval)
    #: Keep each job's files in output_dir after its output was handed over (they are
    #: removed by default: the worker's output store holds every byte).
    keep_output_files: bool = False
