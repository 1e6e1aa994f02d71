"""The ``slurm`` plugin: the worker's API, records and live output in front of a Slurm cluster.

Enable it with ``--plugins slurm`` (with ``sqlite`` and ``spool`` for durable records and
output) and a ``[plugins.slurm]`` section (:class:`~.config.SlurmConfig`). Every admitted job
becomes one Slurm batch job (``sbatch --parsable``; :mod:`.mapping` says how the spec maps
and what is rounded); its status comes from one ``squeue`` per poll interval for all active
jobs (:mod:`.commands`, :mod:`.states`); its output is followed from the files it writes in
``output_dir`` into the worker's own output store, so tail, replay and resume behave as for
local jobs (:mod:`.output`). Signals go through ``scancel --signal=SIG --full`` (every
process of the job, the batch script's included), so a stop is SIGTERM, the grace period,
then SIGKILL, as here (SIGKILL goes to the batch step with ``--batch``: with ``--full``,
Slurm would turn it into a cancel of SIGTERM, KillWait, SIGKILL); pause and resume are
``scontrol suspend`` / ``resume``. A job Slurm has accepted but not started (PENDING) is
RUNNING to the worker, and its time limit runs from its submission; stopping it cancels it
in Slurm (``scancel``), other signals to it are not delivered. After a restart of the
worker, jobs still known to Slurm are followed again from the offsets the output store
kept (those that ended meanwhile are reported as they ended); the rest end as lost.

Limits: ``limits.memory_max`` (``--mem``) and ``limits.cpu`` (``--cpus-per-task``) are taken
when the cluster enforces them (read from ``scontrol show config`` at start: task/cgroup
with ConstrainRAMSpace / ConstrainCores); every other limit, ``isolation.uid``/``gid`` and
``slurm.*`` options are refused at submit with the reason. The plugins that act on this
host's processes between fork and exec (cgroups, netns, pidns, mntns, runas) are refused
beside it by the engine.

Scheduling: dependencies, holds and begin times stay with the engine's scheduler, not
Slurm's ``--dependency``/``--hold``/``--begin``. The engine hands a job to Slurm once the
engine would start it (released, its begin time come, its dependencies ended as required);
Slurm then places it on nodes by resources. Why not Slurm's own:

- the executor seam reports a job RUNNING as soon as the executor accepts it; a job given
  to Slurm held, or waiting on a dependency, would show as running, count against
  ``[engine] max_running`` and have its time limit ticking while it waits;
- Slurm can only depend on jobs it still knows: a dependency on a job that ended longer
  ago than MinJobAge, that failed to start (never reached Slurm), or was purged, has no
  ``afterok:<id>`` form, while the engine decides from its durable records, with its own
  meaning of "ok" (exited 0) and "failed" (any other end, a stop included);
- holds and dependencies survive restarts of the worker as queued records, and release
  goes through the worker's authorization (the owner, or who may stop the job).

The cost: a dependent job reaches Slurm one status poll plus one sbatch after its
dependency ends, and ``squeue`` does not show jobs still waiting in the worker's queue.

Admission: the engine's own caps still apply before a job reaches Slurm. Let Slurm decide
by setting ``[engine] max_running = 0`` (no cap; the default, 256, keeps the rest queued
in the worker). The engine's memory and CPU budgets are still this host's size: declared
``limits.memory_max`` and ``limits.cpu`` count against this machine, not the cluster, so
a cluster's worth of large jobs waits in the worker's queue (reason ``resources``) until
the engine can take budgets from the executor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from worker_core.plugin import Config, ConfigError, JobSpec, PluginError, hookimpl

from .capabilities import ClusterCapabilities
from .commands import SlurmCommandError, SlurmCommands
from .config import SlurmConfig
from .executor import SlurmExecutor
from .mapping import check_spec

if TYPE_CHECKING:
    from worker_core.plugin import Engine

log = logging.getLogger("worker.slurm")

NO_OUTPUT_DIR = (
    "plugins.slurm.output_dir: required without a state directory (jobs write their "
    "output there); set it, or give --state-dir / [engine] state_dir"
)


class SlurmPlugin:
    """Provides :class:`~.executor.SlurmExecutor` and checks job specs against what the
    cluster enforces."""

    name = "slurm"
    config_class = SlurmConfig

    def __init__(self) -> None:
        self.config = SlurmConfig()
        self.output_dir: Path | None = None
        self._executor: SlurmExecutor | None = None

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        self.config = config.section("slurm", SlurmConfig)
        if self.config.slurm_conf is not None:
            conf = config.resolve_path(self.config.slurm_conf)
            if not conf.is_file():
                # Without it Slurm's commands look for a configless cluster in DNS, slowly.
                raise ConfigError(f"plugins.slurm.slurm_conf: {conf} is not a file")
            self.config = attrs.evolve(self.config, slurm_conf=str(conf))
        if self.config.output_dir is not None:
            self.output_dir = config.resolve_path(self.config.output_dir)
        elif engine.state_dir is not None:
            self.output_dir = engine.state_dir / "slurm-output"
        else:
            raise ConfigError(NO_OUTPUT_DIR)

    @hookimpl
    def executor(self, engine: Engine) -> SlurmExecutor:
        # Here rather than in the executor's start(): an error now is an error of the
        # engine's start-up, before any job is recovered or queued.
        if self._executor is None:
            assert self.output_dir is not None, "configure() was not called"
            commands = SlurmCommands(
                self.config.bin_dir, self.config.slurm_conf, self.config.command_timeout
            )
            try:
                capabilities = ClusterCapabilities.from_config(commands.show_config())
            except SlurmCommandError as exc:
                raise PluginError(f"plugins.slurm: cannot reach the Slurm cluster: {exc}") from exc
            try:
                self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"plugins.slurm.output_dir: cannot use {self.output_dir}: {exc.strerror or exc}"
                ) from exc
            log.info(
                "slurm %s: jobs write their output to %s", capabilities.version, self.output_dir
            )
            self._executor = SlurmExecutor(self.config, self.output_dir, commands, capabilities)
        return self._executor

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> Iterable[str]:
        capabilities = self._executor.capabilities if self._executor is not None else None
        return check_spec(spec, capabilities)
