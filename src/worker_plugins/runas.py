"""The ``runas`` plugin: run jobs under a given uid/gid, with a policy on root.

A job may ask for ``isolation.uid`` / ``isolation.gid``; the plugin's configuration supplies
defaults and can refuse root::

    [plugins.runas]
    default_uid = 65534     # nobody, for jobs that do not ask
    default_gid = 65534
    allow_root = false      # refuse jobs that would run as uid 0

Supplementary groups are dropped: a job gets exactly the gid it asked for.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from worker_core.plugin import Config, InvalidSpec, Job, JobSpec, SpawnPlan, hookimpl


@attrs.frozen
class RunAsConfig:
    #: The uid of a job that does not ask for one (unset: the server's own).
    default_uid: int | None = None
    #: The gid of a job that does not ask for one (unset: the uid, else the server's own).
    default_gid: int | None = None
    #: false: refuse every job that would run as uid or gid 0.
    allow_root: bool = True


class RunAs:
    """Switch the job's identity just before exec."""

    config_class = RunAsConfig

    def __init__(self) -> None:
        self.config = RunAsConfig()

    @hookimpl
    def configure(self, config: Config) -> None:
        self.config = config.section("runas", RunAsConfig)

    def _ids(self, spec: JobSpec) -> tuple[int | None, int | None]:
        uid = spec.isolation.uid if spec.isolation.uid is not None else self.config.default_uid
        gid = spec.isolation.gid if spec.isolation.gid is not None else self.config.default_gid
        return uid, gid

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> Iterable[str]:
        uid, gid = self._ids(spec)
        if not self.config.allow_root:
            if uid is None or uid == 0:
                raise InvalidSpec(
                    "isolation.uid", "jobs may not run as root here (runas.allow_root = false)"
                )
            if gid is None or gid == 0:
                raise InvalidSpec(
                    "isolation.gid", "jobs may not run with gid 0 here (runas.allow_root = false)"
                )
        return ["isolation.uid", "isolation.gid"]

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        uid, gid = self._ids(job.spec)
        if gid is not None:
            plan.gid = gid
        if uid is not None:
            plan.uid = uid
            if plan.gid is None:
                plan.gid = uid  # never keep root's group behind a dropped uid
        if plan.uid is not None or plan.gid is not None:
            plan.groups = []
            plan.no_new_privileges = True
