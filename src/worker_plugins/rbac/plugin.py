"""The ``rbac`` plugin: the caller's certificate Common Name -> roles -> permissions.

Configuration::

    [plugins.rbac]
    policy = "policy.toml"   # relative to the config file's directory

The policy (see :mod:`.policy`) is read and validated when the engine is constructed, so a
mistake in it stops the server from starting instead of denying calls later.

Once loaded, this plugin is the authority: it answers every ``authorize`` call ``True`` or
``False``, never abstains, and a name the policy does not list may do nothing. Other
authorization plugins compose with it (any ``False`` denies), so a restricting plugin such as
``allowlist`` narrows what a role allows. For READ and STOP the engine turns a denial into
"not found", so a caller cannot even learn that another's job exists.

A principal whose certificate the policy revokes (``[revoked]``) is refused outright: every
``authorize`` call raises :class:`~worker_core.plugin.PermissionDenied`, so every call, a
listing included, fails with "permission denied" instead of looking like an empty server
(there is nothing to hide from a caller whose identity is refused as a whole). Each revoked
certificate is logged once, when first refused.

``worker serve`` reloads the policy on SIGHUP (:meth:`RbacPlugin.reload`): a policy that
does not load leaves the previous one in force.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import attrs

from worker_core.plugin import (
    Action,
    Config,
    ConfigError,
    Job,
    PermissionDenied,
    Principal,
    hookimpl,
)

from .policy import Permission, Policy, load

log = logging.getLogger("worker.rbac")

SECTION = "rbac"


@attrs.frozen
class RbacConfig:
    """The ``[plugins.rbac]`` section."""

    #: Path of the policy file (TOML). A relative path is relative to the directory of the
    #: config file it was read from (the current directory for a Config built in code).
    policy: str


def _owns(principal: Principal, job: Job) -> bool:
    # By name, like every identity check here: the name is the certificate's CN.
    return job.owner_name == principal.name


def decide(
    permissions: frozenset[Permission], principal: Principal, action: Action, job: Job | None
) -> bool:
    """Whether ``permissions`` allow ``principal`` to perform ``action`` on ``job``.

    ``job`` is None when the engine asks about an action in general (listing jobs): the
    answer is then whether the principal could perform it on some job; the engine asks
    again for each one.
    """
    if action is Action.SUBMIT:
        return Permission.SUBMIT in permissions
    if action is Action.STOP:
        every, own = Permission.STOP_ALL, Permission.STOP_OWN
    elif action is Action.READ:
        every, own = Permission.READ_ALL, Permission.READ_OWN
    elif action is Action.PURGE:
        every, own = Permission.PURGE_ALL, Permission.PURGE_OWN
    else:  # an action added to the engine that this policy has no word for: deny
        return False
    if every in permissions:
        return True
    if own not in permissions:
        return False
    return job is None or _owns(principal, job)


class RbacPlugin:
    """Authorizes every call by the principal's roles in the policy file."""

    config_class = RbacConfig

    def __init__(self) -> None:
        # No policy until configure: until then everything is denied (fail closed).
        # Construction stays cheap and side-effect free: `worker` loads every plugin to let
        # it add commands.
        self._policy = Policy()
        self._path: Path | None = None
        # Revoked certificates already logged (by fingerprint): one line each, not one per
        # call. Bounded by the certificates the policies ever revoked.
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    @property
    def policy(self) -> Policy:
        return self._policy

    @hookimpl
    def configure(self, config: Config) -> None:
        """Read ``[plugins.rbac]`` and load the policy it names; any error aborts startup."""
        if "policy" not in config.plugins.get(SECTION, {}):
            raise ConfigError(
                "the rbac plugin needs a policy file: set [plugins.rbac] "
                'policy = "path/to/policy.toml" in the config file'
            )
        settings = config.section(SECTION, RbacConfig)
        self._path = config.resolve_path(settings.policy)
        self._policy = load(self._path)

    def reload(self) -> str:
        """Read the policy file again and put it in force; what was loaded, for the log.

        Raises :class:`ConfigError` (every problem, as at start-up) and keeps the policy in
        force when the file does not load.
        """
        if self._path is None:
            raise ConfigError("the rbac plugin has no policy file to reload (not configured)")
        # One reference swap: a call being authorized sees the old policy or the new one.
        self._policy = load(self._path)
        return f"policy {self._path}: {self._policy.describe()}"

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool:
        """Allow or deny by the policy; a name the policy does not list is denied.

        Raises :class:`PermissionDenied` for a principal whose certificate is revoked.
        """
        policy = self._policy
        if policy.is_revoked(principal):
            self._refuse_revoked(principal)
        return decide(policy.permissions(principal), principal, action, job)

    def _refuse_revoked(self, principal: Principal) -> None:
        key = principal.cert_sha256 or principal.cert_serial or principal.name
        with self._lock:
            first = key not in self._logged
            self._logged.add(key)
        if first:
            log.warning(
                "refused %r: its certificate is revoked (serial %s, sha256 %s)",
                principal.name,
                principal.cert_serial,
                principal.cert_sha256,
            )
        raise PermissionDenied(f"the client certificate of {principal.name!r} is revoked")
