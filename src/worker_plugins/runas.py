"""The ``runas`` plugin: which identity each job runs as, and how little root may do.

Loaded, it makes jobs unprivileged by default: a job runs as ``nobody`` (65534) unless the
configuration maps its caller to an account or says otherwise, and root is refused::

    [plugins.runas]
    default_uid = 65534        # nobody: a job whose caller has no account below
    allow_root = false         # refuse every job that would run as uid or gid 0

    [plugins.runas.users]      # caller (client certificate Common Name) -> account
    alice = "alice"            # alice's account and primary group, looked up at start
    bob = 1001                 # a uid (its account's primary group, else gid 1001)
    carol = "carol:research"   # an account and a group; "1002:1002" works too

Every job it confines gets ``no_new_privs`` and no supplementary groups. An unprivileged
job holds no capability and can gain none (empty bounding set). Where ``allow_root = true``
lets a job run as root, it is confined unless ``confine_root = false``: its own PID
namespace (it cannot see or signal a process outside itself), a private mount namespace in
which ``/sys``, ``/proc/sys`` and ``/proc/sysrq-trigger`` are read-only (it cannot leave its
cgroups or change their limits: cgroup files are root's, so only a read-only mount keeps
root out), and only ``root_capabilities`` (no ``CAP_SYS_ADMIN`` to remount them, no
``CAP_SYS_PTRACE``, ``CAP_SYS_MODULE``, ...). As PID 1 of its namespace it ignores SIGTERM
unless it handles it, so a stop reaches SIGKILL after the grace period (see ``pidns``).

A caller's job runs as the caller's account, else the default; a spec naming another
identity (``--uid``) is refused unless ``callers_choose_ids = true``. Jobs without a caller
(the library, ``worker run``) may name theirs. Jobs sharing one identity can signal each
other: enable ``pidns`` too to keep them apart.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from worker_core.plugin import (
    Config,
    ConfigError,
    InvalidSpec,
    Isolation,
    Job,
    JobSpec,
    SpawnPlan,
    TomlProblem,
    describe_toml_problems,
    hookimpl,
)

SECTION = "runas"

#: What a confined root job keeps: Docker's default set without MKNOD (raw devices),
#: NET_RAW (packet forging) and SETFCAP (file capabilities for others to run later). None of
#: them lets it remount, load modules, trace or reach beyond its namespaces.
ROOT_CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "AUDIT_WRITE",
)

#: Read-only for a confined root job: the cgroup files and kernel settings under /sys, the
#: sysctls, and the key that reboots or crashes the host.
ROOT_READONLY_PATHS = ("/sys", "/proc/sys", "/proc/sysrq-trigger")

#: The highest valid id; (uid_t)-1 means "unchanged" to the kernel.
_MAX_ID = 2**32 - 2


def _id(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not 0 <= value <= _MAX_ID):
        raise ValueError(f"{attribute.name} must be a uid/gid from 0 to {_MAX_ID}, got {value!r}")


def _capabilities(
    instance: object, attribute: attrs.Attribute[Any], value: list[str] | None
) -> None:
    if value is None:
        return
    try:
        SpawnPlan.capability_numbers(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


def _absolute_paths(
    instance: object, attribute: attrs.Attribute[Any], value: list[str] | None
) -> None:
    relative = [p for p in value or () if not p.startswith("/")]
    if relative:
        raise ValueError(f"{attribute.name} must be absolute paths, got {relative}")


@attrs.frozen
class RunAsConfig:
    """Settings of the ``runas`` plugin (``[plugins.runas]``)."""

    #: The uid of a job whose caller has no account in users and whose spec names none
    #: (65534: nobody). None, in code only: the engine's own.
    default_uid: int | None = attrs.field(default=65534, validator=_id)
    #: The gid of such a job (unset: the primary group of default_uid's account, else the
    #: same number as default_uid).
    default_gid: int | None = attrs.field(default=None, validator=_id)
    #: false: refuse every job that would run as uid or gid 0 (and a users entry that is
    #: root). true: root jobs run, confined unless confine_root = false.
    allow_root: bool = False
    #: A root job gets its own PID namespace, a private mount namespace with
    #: root_readonly_paths read-only, and only root_capabilities. false: it runs with every
    #: power of the host's root.
    confine_root: bool = True
    #: The capabilities a confined root job keeps; every other is dropped from its bounding,
    #: effective and permitted sets. Unset: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
    #: SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, AUDIT_WRITE (Docker's default
    #: set without MKNOD, NET_RAW and SETFCAP).
    root_capabilities: list[str] | None = attrs.field(default=None, validator=_capabilities)
    #: Made read-only, with the mounts below them, for a confined root job. Unset: /sys,
    #: /proc/sys and /proc/sysrq-trigger.
    root_readonly_paths: list[str] | None = attrs.field(default=None, validator=_absolute_paths)
    #: true: a caller's job may run as any uid/gid its spec names (never root unless
    #: allow_root). false: it runs as the caller's account (users) or the default, and a
    #: spec naming another identity is refused. Jobs with no caller may always name theirs.
    callers_choose_ids: bool = False
    #: Callers (client certificate Common Names) and the account their jobs run as: a user
    #: name ("alice": its uid and primary group), "user:group", "uid:gid", or a uid. Names are
    #: looked up when the engine starts; an unknown one stops it.
    users: Mapping[str, str | int] = attrs.field(factory=dict)


@attrs.frozen
class Account:
    """A resolved identity: the uid and gid a job runs as."""

    uid: int
    gid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0 or self.gid == 0


def primary_gid(uid: int) -> int:
    """The primary group of ``uid``'s account; the same number if it has no account."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def _number(text: str, kind: str) -> int:
    value = int(text)
    if not 0 <= value <= _MAX_ID:
        raise ValueError(f"{kind} {value} is out of range (0 to {_MAX_ID})")
    return value


def parse_account(value: object) -> Account:
    """An account from a ``users`` value (see :class:`RunAsConfig`); ValueError says what
    is wrong (an unknown user or group name, a bad id)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f'expected a user name, "user:group" or a uid, got {type(value).__name__} {value!r}'
        )
    if isinstance(value, int):
        uid = _number(str(value), "uid")
        return Account(uid, primary_gid(uid))
    user, colon, group = value.partition(":")
    if not user or (colon and not group):
        raise ValueError(f'expected a user name, "user:group" or a uid, got {value!r}')
    if user.isdigit():
        uid = _number(user, "uid")
        gid = primary_gid(uid)
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"no user {user!r} on this host") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if colon:
        if group.isdigit():
            gid = _number(group, "gid")
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ValueError(f"no group {group!r} on this host") from None
    return Account(uid, gid)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _config_error(config: Config, problems: list[TomlProblem]) -> ConfigError:
    """Problems found after the section's types were checked, named like the engine's own."""
    if config.source is not None and config.source_text is not None:
        return ConfigError(
            describe_toml_problems(_shown(config.source), config.source_text, problems)
        )
    return ConfigError("; ".join(f"{'.'.join(map(str, p.path))}: {p.message}" for p in problems))


class RunAs:
    """Chooses each job's identity and what it may do with it (see the module's docs)."""

    config_class = RunAsConfig
    #: It acts between fork and exec on this host: refused beside another executor.
    local_only = True

    def __init__(self) -> None:
        self.config = RunAsConfig()
        self._accounts: dict[str, Account] = {}
        self._default_gid: int | None = primary_gid(65534)

    # --------------------------------------------------------------------- configuration

    @hookimpl
    def configure(self, config: Config) -> None:
        settings = config.section(SECTION, RunAsConfig)
        problems: list[TomlProblem] = []
        accounts: dict[str, Account] = {}
        for caller, value in settings.users.items():
            where = ("plugins", SECTION, "users", caller)
            try:
                account = parse_account(value)
            except ValueError as exc:
                problems.append(TomlProblem(where, str(exc), value))
                continue
            if account.is_root and not settings.allow_root:
                problems.append(
                    TomlProblem(
                        where,
                        f"is root (uid {account.uid}, gid {account.gid}) but allow_root = false",
                        value,
                    )
                )
            accounts[caller] = account
        for key in ("default_uid", "default_gid"):
            if getattr(settings, key) == 0 and not settings.allow_root:
                problems.append(
                    TomlProblem(("plugins", SECTION, key), "is root but allow_root = false")
                )
        if problems:
            raise _config_error(config, problems)
        self.config = settings
        self._accounts = accounts
        if settings.default_gid is not None:
            self._default_gid = settings.default_gid
        elif settings.default_uid is not None:
            self._default_gid = primary_gid(settings.default_uid)
        else:
            self._default_gid = None

    # --------------------------------------------------------------------- identities

    def _base(self, owner: str | None) -> tuple[int | None, int | None]:
        """The identity a job of ``owner`` runs as when its spec names none."""
        account = self._accounts.get(owner) if owner is not None else None
        if account is not None:
            return account.uid, account.gid
        return self.config.default_uid, self._default_gid

    def identity(self, owner: str | None, isolation: Isolation) -> tuple[int | None, int | None]:
        """The uid and gid a job of ``owner`` asking for ``isolation`` runs as (None: the
        engine's own); raises :class:`InvalidSpec` for one it may not have."""
        base_uid, base_gid = self._base(owner)
        uid, gid = isolation.uid, isolation.gid
        if owner is not None and not self.config.callers_choose_ids:
            for field, asked, allowed in (("uid", uid, base_uid), ("gid", gid, base_gid)):
                if asked is not None and asked != allowed:
                    raise InvalidSpec(
                        f"isolation.{field}",
                        f"{owner}'s jobs run as {field} {allowed} here; asking for {asked} is "
                        "not allowed (plugins.runas.users, callers_choose_ids)",
                    )
        if uid is None:
            uid = base_uid
            if gid is None:
                gid = base_gid
        elif gid is None:
            gid = base_gid if uid == base_uid else primary_gid(uid)
        if uid is not None and gid is None:
            gid = primary_gid(uid)  # never keep the engine's group (root's) behind a new uid
        self._refuse_root(uid, gid)
        return uid, gid

    def _refuse_root(self, uid: int | None, gid: int | None) -> None:
        if self.config.allow_root:
            return
        # None keeps the engine's own identity: root if the engine runs as root.
        if (uid if uid is not None else os.geteuid()) == 0:
            raise InvalidSpec(
                "isolation.uid", "jobs may not run as root here (runas.allow_root = false)"
            )
        if (gid if gid is not None else os.getegid()) == 0:
            raise InvalidSpec(
                "isolation.gid", "jobs may not run with gid 0 here (runas.allow_root = false)"
            )

    # --------------------------------------------------------------------- jobs

    @hookimpl
    def validate_spec(self, spec: JobSpec) -> Iterable[str]:
        # The caller is not known at submit: what any caller would be refused (root) is
        # refused now; pre_spawn checks the ids against the caller's own account.
        self.identity(None, spec.isolation)
        return ["isolation.uid", "isolation.gid"]

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        uid, gid = self.identity(job.owner_name, job.spec.isolation)
        if gid is not None:
            plan.gid = gid
        if uid is not None:
            plan.uid = uid
        plan.groups = []
        plan.no_new_privileges = True
        runs_as = plan.uid if plan.uid is not None else os.geteuid()
        if runs_as != 0:
            # Nothing to keep: no capability now, none to gain from a program it runs.
            plan.capabilities = set()
        elif self.config.confine_root:
            plan.namespaces.update({"pid", "mount"})
            capabilities = self.config.root_capabilities
            paths = self.config.root_readonly_paths
            plan.capabilities = set(ROOT_CAPABILITIES if capabilities is None else capabilities)
            plan.readonly_paths.extend(ROOT_READONLY_PATHS if paths is None else paths)
