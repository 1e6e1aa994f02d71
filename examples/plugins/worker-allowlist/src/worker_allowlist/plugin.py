"""The ``allowlist`` plugin: which commands each principal may submit.

Configuration::

    [plugins.allowlist]
    allow_others = false            # see below

    [plugins.allowlist.rules]
    "*"   = ["true", "echo"]        # every principal
    alice = ["sleep", "/usr/local/bin/backup"]

A principal may run the union of its own list and ``"*"``'s; a principal in neither may run
nothing. An entry is a bare name, resolved on the standard PATH when the engine starts, or an
absolute path. A job's command is resolved the way the engine resolves it (on the *job's*
PATH) and matches an entry when both name the same file (symlinks followed, so ``/bin/echo``
and ``/usr/bin/echo`` are one) and the job invokes it under the entry's name. The name check
keeps a multi-call binary (busybox, ``sh`` -> ``dash``) allowed under one name from running
as another; a copy of ``echo`` in a directory the job put on its PATH is a different file.

Authorization composes: every ``authorize`` answer is collected and any ``False`` wins; with
an authorization plugin loaded, a call no plugin answers ``True`` is denied. This plugin
answers ``False`` for a SUBMIT of a command not on the list and otherwise abstains (``None``),
so it narrows what another authorizer (``rbac``) allows. Alone it would therefore deny
everything; set ``allow_others = true`` to have it answer ``True`` to whatever it does not
deny (every READ and STOP, and every allowed SUBMIT).

Only calls that name a principal are checked: the engine's ``principal=None`` is the trusted
library caller.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence

import attrs

from worker_core.plugin import (
    DEFAULT_PATH,
    Action,
    Config,
    ConfigError,
    Job,
    JobSpec,
    PermissionDenied,
    Principal,
    SpawnPlan,
    hookimpl,
)

#: The rule that applies to every principal.
EVERYONE = "*"


@attrs.frozen
class AllowlistConfig:
    """The ``[plugins.allowlist]`` section."""

    rules: dict[str, list[str]] = attrs.Factory(dict)
    allow_others: bool = False


@attrs.frozen
class Program:
    """One allowed program: the name it is invoked as and the file it really is."""

    name: str
    realpath: str


def program_for(command: str, resolved: str) -> Program:
    return Program(os.path.basename(command), os.path.realpath(resolved))


def resolve_job_command(spec: JobSpec) -> str | None:
    """The file the engine will exec for ``spec``, found the way the engine finds it."""
    command = spec.command
    if os.path.isabs(command):
        return os.path.normpath(command)
    if "/" in command:
        return os.path.normpath(os.path.join(spec.cwd, command))
    found = shutil.which(command, path=spec.env.get("PATH", DEFAULT_PATH))
    return os.path.abspath(found) if found else None


class AllowlistPlugin:
    """Denies a SUBMIT whose command is not on the principal's list; abstains otherwise."""

    #: Its ``[plugins.NAME]`` section, for ``worker serve --help`` and ``worker plugins``.
    config_class = AllowlistConfig

    def __init__(self) -> None:
        self._rules: dict[str, frozenset[Program]] = {}
        self._allow_others = False

    @hookimpl
    def configure(self, config: Config) -> None:
        raw = config.plugins.get("allowlist", {}).get("rules", {})
        # cattrs would turn `alice = "echo"` into ["e", "c", "h", "o"]: check the shape first.
        if isinstance(raw, Mapping):
            for name, entries in raw.items():
                if not isinstance(entries, Sequence) or isinstance(entries, str):
                    raise ConfigError(
                        f'must be a list of commands, e.g. ["echo"] @ $.plugins.allowlist.rules.{name}'
                    )
        section = config.section("allowlist", AllowlistConfig)
        self._rules = {
            name: frozenset(_resolve_entry(name, entry) for entry in entries)
            for name, entries in section.rules.items()
        }
        self._allow_others = section.allow_others

    def allowed(self, principal_name: str, program: Program) -> bool:
        """Whether ``program`` is on the principal's list or everyone's."""
        return any(program in self._rules.get(name, ()) for name in (principal_name, EVERYONE))

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool | None:
        if action is Action.SUBMIT and job is not None:
            resolved = resolve_job_command(job.spec)
            if resolved is None or not self.allowed(
                principal.name, program_for(job.spec.command, resolved)
            ):
                return False
        # Abstaining lets another authorizer decide; allow_others makes this one enough alone.
        return True if self._allow_others else None

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        """Check again what will really be exec'd.

        ``authorize`` resolved the command itself; the plan holds the engine's resolution.
        Should the two ever differ (a file appearing on the job's PATH in between), the job
        fails to start rather than run something that was not allowed.
        """
        if job.owner is None:
            return
        if not self.allowed(job.owner.name, program_for(plan.argv[0], plan.executable)):
            raise PermissionDenied(
                f"{job.owner.name!r} may not run {plan.executable!r} (allowlist)"
            )


def _resolve_entry(principal: str, entry: str) -> Program:
    """A configured entry into the program it allows; fails startup if there is none."""
    where = f"$.plugins.allowlist.rules.{principal}"
    if "/" in entry and not os.path.isabs(entry):
        raise ConfigError(f"{entry!r}: use a bare name or an absolute path @ {where}")
    if os.path.isabs(entry):
        path = os.path.normpath(entry)
        if not os.path.isfile(path):
            raise ConfigError(f"{entry!r} does not exist @ {where}")
        return program_for(entry, path)
    found = shutil.which(entry, path=DEFAULT_PATH)
    if found is None:
        raise ConfigError(f"{entry!r} is not on the standard PATH ({DEFAULT_PATH}) @ {where}")
    return program_for(entry, found)
