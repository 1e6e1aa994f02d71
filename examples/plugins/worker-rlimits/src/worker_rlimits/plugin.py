"""The ``rlimits`` plugin: per-job POSIX resource limits, set between fork and exec.

A job asks with options (``JobSpec.options``)::

    rlimits.nofile = "1024"         open files (soft = hard = 1024)
    rlimits.core   = "0"            no core dumps
    rlimits.cpu    = "60:65"        SIGXCPU after 60 CPU seconds, SIGKILL after 65
    rlimits.as     = "2G"           virtual address space
    rlimits.fsize  = "100M"         largest file the job may write (SIGXFSZ beyond)

and the operator sets defaults and ceilings::

    [plugins.rlimits.defaults]      # for jobs that do not set the option
    nofile = 1024
    core = 0

    [plugins.rlimits.maximum]       # the highest hard limit a job may ask for; jobs that do
    as = "8G"                       # not ask run under it

Everything is checked at submit time (``validate_spec``), so a bad value is refused with
:class:`~worker_core.InvalidSpec` and no job is created; ``pre_spawn`` only writes the spawn
plan, which the launcher applies with ``setrlimit`` in the child before ``execve``.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from worker_core.plugin import Config, ConfigError, InvalidSpec, Job, JobSpec, SpawnPlan, hookimpl

from .values import (
    RESOURCES,
    UNLIMITED,
    Resource,
    exceeds,
    format_limit,
    parse_amount,
    parse_limit,
    stricter,
)

#: The options this plugin owns all start with this; the engine routes nothing itself, so the
#: plugin claims each one it handles (see ``validate_spec``).
OPTION_PREFIX = "rlimits."

#: Bit of CAP_SYS_RESOURCE in /proc/self/status's CapEff mask (linux/capability.h).
_CAP_SYS_RESOURCE = 24


@attrs.frozen
class RlimitsConfig:
    """The ``[plugins.rlimits]`` section, as TOML gives it; values are parsed in ``configure``.

    Keys are resource names (``nofile``, ``core``, ``cpu``, ``as``, ``fsize``); values use the
    option syntax (``1024``, ``"1024:4096"``, ``"512M"``, ``"unlimited"``).
    """

    defaults: dict[str, int | str] = attrs.Factory(dict)
    maximum: dict[str, int | str] = attrs.Factory(dict)


@attrs.frozen
class HostLimits:
    """What the host lets the launcher set, read once at configure time.

    Raising a hard limit above the worker's own needs CAP_SYS_RESOURCE (root in a container
    often lacks it), and no process may have more open files than ``fs.nr_open``. Checking
    here turns what would be a "failed to start" at ``setrlimit`` into a refusal at submit.
    """

    can_raise_hard: bool
    nr_open: int
    own_hard: Mapping[str, int]

    @classmethod
    def read(cls) -> HostLimits:
        can_raise = False
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("CapEff:"):
                    can_raise = bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
        nr_open = 1 << 20  # the kernel's default, if /proc/sys is not readable
        with contextlib.suppress(OSError, ValueError):
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        own_hard = {}
        for res in RESOURCES.values():
            hard = resource.getrlimit(getattr(resource, res.rlimit))[1]
            own_hard[res.key] = UNLIMITED if hard == resource.RLIM_INFINITY else hard
        return cls(can_raise, nr_open, own_hard)

    def problem(self, res: Resource, limit: tuple[int, int]) -> str | None:
        """Why the launcher could not set ``limit`` here, or None if it can."""
        hard = limit[1]
        if res.key == "nofile" and exceeds(hard, self.nr_open):
            return f"the kernel allows at most {self.nr_open} open files per process (fs.nr_open)"
        own = self.own_hard[res.key]
        if not self.can_raise_hard and exceeds(hard, own):
            return (
                f"the hard limit cannot be raised above the worker's own "
                f"({format_limit((own, own))}) without CAP_SYS_RESOURCE"
            )
        return None


class RlimitsPlugin:
    """Sets ``SpawnPlan.rlimits`` from job options, configured defaults and ceilings."""

    #: Its ``[plugins.NAME]`` section, for ``worker serve --help`` and ``worker plugins``.
    config_class = RlimitsConfig

    def __init__(self) -> None:
        self._defaults: dict[str, tuple[int, int]] = {}
        self._maximum: dict[str, int] = {}
        self._host: HostLimits | None = None

    # -- configuration -------------------------------------------------------------------

    @hookimpl
    def configure(self, config: Config) -> None:
        """Parse and check the section now, so a bad default fails startup, not every job."""
        section = config.section("rlimits", RlimitsConfig)
        host = HostLimits.read()
        maximum: dict[str, int] = {}
        for key, text in section.maximum.items():
            res = _config_resource(key, "maximum")
            where = f"$.plugins.rlimits.maximum.{key}"
            if ":" in str(text):
                raise ConfigError(f"a maximum is one amount, not SOFT:HARD @ {where}")
            try:
                maximum[key] = parse_amount(res, str(text))
            except ValueError as exc:
                raise ConfigError(f"{exc} @ {where}") from None
        defaults: dict[str, tuple[int, int]] = {}
        for key, text in section.defaults.items():
            res = _config_resource(key, "defaults")
            where = f"$.plugins.rlimits.defaults.{key}"
            try:
                limit = parse_limit(res, str(text))
            except ValueError as exc:
                raise ConfigError(f"{exc} @ {where}") from None
            if key in maximum and exceeds(limit[1], maximum[key]):
                raise ConfigError(
                    f"the default's hard limit is above maximum.{key} "
                    f"({format_limit((maximum[key], maximum[key]))}) @ {where}"
                )
            problem = host.problem(res, limit)
            if problem:
                raise ConfigError(f"{problem} @ {where}")
            defaults[key] = limit
        for key, ceiling in maximum.items():
            problem = host.problem(RESOURCES[key], (ceiling, ceiling))
            if problem and key not in defaults:  # it would be every job's limit
                raise ConfigError(f"{problem} @ $.plugins.rlimits.maximum.{key}")
        self._defaults, self._maximum, self._host = defaults, maximum, host

    # -- the job path --------------------------------------------------------------------

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> Iterable[str]:
        """Refuse bad ``rlimits.*`` options; claim the ones present.

        Claiming matters: the engine refuses any option no plugin claims, so without this
        return value every job that sets ``rlimits.nofile`` would be refused.
        """
        self.limits_for(spec)
        return [f"options.{key}" for key in spec.options if key.startswith(OPTION_PREFIX)]

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        """Write the job's limits into the plan; the launcher calls ``setrlimit`` before exec."""
        for key, limit in self.limits_for(job.spec).items():
            name = RESOURCES[key].rlimit
            # Another plugin may limit the same resource: never loosen what it set.
            existing = plan.rlimits.get(name)
            plan.rlimits[name] = limit if existing is None else stricter(existing, limit)

    def limits_for(self, spec: JobSpec) -> dict[str, tuple[int, int]]:
        """The ``(soft, hard)`` limits a job gets, by resource key; raises InvalidSpec."""
        host = self._host or HostLimits.read()
        limits = dict(self._defaults)
        for key, most in self._maximum.items():
            limits.setdefault(key, (most, most))
        for option, text in spec.options.items():
            if not option.startswith(OPTION_PREFIX):
                continue
            key = option.removeprefix(OPTION_PREFIX)
            field = f"options.{option}"
            res = RESOURCES.get(key)
            if res is None:
                # Without this, check_claimed would say "is the 'rlimits' plugin enabled?",
                # which misleads: it is, the resource name is wrong.
                raise InvalidSpec(field, f"unknown resource {key!r} (known: {_known()})")
            try:
                limit = parse_limit(res, text)
            except ValueError as exc:
                raise InvalidSpec(field, str(exc)) from None
            ceiling = self._maximum.get(key)
            if ceiling is not None and exceeds(limit[1], ceiling):
                raise InvalidSpec(
                    field,
                    f"the hard limit may be at most {format_limit((ceiling, ceiling))} here "
                    f"(plugins.rlimits.maximum.{key})",
                )
            problem = host.problem(res, limit)
            if problem:
                raise InvalidSpec(field, problem)
            limits[key] = limit
        return limits


def _known() -> str:
    return ", ".join(RESOURCES)


def _config_resource(key: str, table: str) -> Resource:
    res = RESOURCES.get(key)
    if res is None:
        raise ConfigError(
            f"unknown resource {key!r} (known: {_known()}) @ $.plugins.rlimits.{table}.{key}"
        )
    return res
