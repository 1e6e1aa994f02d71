"""The RBAC policy: who (a certificate Common Name) has which roles, and what each role may do.

A policy file is TOML::

    [roles.operator]
    permissions = ["submit", "stop:own", "read:own"]

    [users]
    alice = ["operator"]
    "carol@example.com" = ["operator", "viewer"]

    [revoked]                       # optional: client certificates refused on every call
    serials = ["4162aa1794b51fb8bce6764f6b164ffc2923460d"]
    sha256 = ["76:4A:8C:...:F1:A0"]  # 64 hex digits, colons optional, any case

The permissions are ``submit``, ``stop:own``, ``stop:all``, ``read:own``, ``read:all``,
``purge:own`` and ``purge:all`` (``read`` covers getting a job's status, listing jobs and
following their output; ``purge`` removes a finished job's record and output for good, and
needs ``read`` of the job too). "own" means jobs the principal submitted. A name not under
``[users]`` has no permission at all.

``[revoked]`` lists client certificates by serial number or SHA-256 fingerprint (as
``worker certs show`` prints them; ``openssl x509 -serial -fingerprint -sha256`` spells them
with capitals and colons, which is accepted too). A revoked certificate may do nothing,
whatever its Common Name's roles: another certificate with the same name still works.

Loading is pure (no engine, no plugin state) and strict: an unknown key, an unknown
permission, a user given a role that is not defined, a wrong type — each is reported with the
file, the line where it can be found cheaply, and the TOML path of the offending value, all
problems at once, so a policy is fixed in one pass. The report is the one the configuration
file's uses (:func:`worker_core.plugin.describe_toml_problems`).
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NewType

import attrs
import cattrs

from worker_core.plugin import (
    ConfigError,
    Principal,
    TomlProblem,
    describe_toml_problems,
    make_converter,
    toml_problems,
)
from worker_plugins.certs.fingerprint import normalize_serial, normalize_sha256


class Permission(enum.Enum):
    """One thing a role may do."""

    SUBMIT = "submit"
    STOP_OWN = "stop:own"
    STOP_ALL = "stop:all"
    READ_OWN = "read:own"
    READ_ALL = "read:all"
    PURGE_OWN = "purge:own"
    PURGE_ALL = "purge:all"


PERMISSION_NAMES = tuple(sorted(p.value for p in Permission))


@attrs.frozen
class Role:
    """``[roles.NAME]``: the permissions a role grants."""

    permissions: tuple[Permission, ...]


#: A certificate serial number and a SHA-256 fingerprint, in the canonical spelling of
#: :mod:`worker_plugins.certs.fingerprint` once structured (the file may spell them otherwise).
Serial = NewType("Serial", str)
Sha256 = NewType("Sha256", str)


@attrs.frozen
class Revoked:
    """``[revoked]``: client certificates refused whatever their Common Name may do."""

    serials: tuple[Serial, ...] = ()
    sha256: tuple[Sha256, ...] = ()


@attrs.frozen
class PolicyFile:
    """The file as written: roles by name, each user's (Common Name's) role names, and the
    revoked certificates."""

    roles: dict[str, Role]
    users: dict[str, tuple[str, ...]]
    revoked: Revoked = Revoked()


@attrs.frozen
class Policy:
    """The validated policy, resolved for fast checks: each user's permissions, roles unfolded."""

    grants: Mapping[str, frozenset[Permission]] = attrs.field(factory=dict)
    revoked_serials: frozenset[str] = frozenset()
    revoked_sha256: frozenset[str] = frozenset()

    def permissions(self, principal: Principal) -> frozenset[Permission]:
        """What ``principal`` may do; nothing for a name the policy does not list."""
        return self.grants.get(principal.name, frozenset())

    def is_revoked(self, principal: Principal) -> bool:
        """Whether ``principal`` authenticated with a certificate the policy revokes."""
        return (
            principal.cert_serial is not None and principal.cert_serial in self.revoked_serials
        ) or (principal.cert_sha256 is not None and principal.cert_sha256 in self.revoked_sha256)

    def describe(self) -> str:
        """A summary for the log: ``3 users, 1 revoked certificate``."""
        users = len(self.grants)
        revoked = len(self.revoked_serials) + len(self.revoked_sha256)
        return (
            f"{users} user{'s' if users != 1 else ''}, "
            f"{revoked} revoked certificate{'s' if revoked != 1 else ''}"
        )


# -------------------------------------------------------------------------------------------
# structuring and validation
# -------------------------------------------------------------------------------------------


def _structure_permission(value: Any, _: type[Any]) -> Permission:
    # A hook of our own instead of cattrs' enum handling, whose message ("'stopp' is not a
    # valid Permission") names neither the choices nor the file's vocabulary.
    if isinstance(value, str):
        try:
            return Permission(value)
        except ValueError:
            pass
    raise ValueError(
        f"unknown permission {value!r} (expected one of: {', '.join(PERMISSION_NAMES)})"
    )


def _list_only(converter: cattrs.Converter, kind: Any, example: str) -> None:
    """Make ``kind`` (a tuple type) accept only a TOML array.

    cattrs structures a tuple from any iterable, so ``alice = "operator"`` would become the
    roles ``("o", "p", ...)``: refuse it with a message showing the right form.
    """
    inner = converter.get_structure_hook(kind)

    def structure(value: Any, _: type[Any]) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"must be a list, e.g. {example}, got {type(value).__name__} {value!r}")
        return inner(value, kind)

    converter.register_structure_hook_func(lambda t: t == kind, structure)


def _structure_serial(value: Any, _: type[Any]) -> Serial:
    if not isinstance(value, str):
        raise TypeError(f"expected a string of hex digits, got {type(value).__name__} {value!r}")
    return Serial(normalize_serial(value))


def _structure_sha256(value: Any, _: type[Any]) -> Sha256:
    if not isinstance(value, str):
        raise TypeError(f"expected a string of hex digits, got {type(value).__name__} {value!r}")
    return Sha256(normalize_sha256(value))


def _converter() -> cattrs.Converter:
    # The project's converter: unknown keys are errors and scalars are not coerced.
    converter = make_converter()
    converter.register_structure_hook(Permission, _structure_permission)
    converter.register_structure_hook(Serial, _structure_serial)
    converter.register_structure_hook(Sha256, _structure_sha256)
    _list_only(converter, tuple[Permission, ...], '["submit", "read:own"]')
    _list_only(converter, tuple[str, ...], '["operator"]')
    _list_only(converter, tuple[Serial, ...], '["4162aa1794b51fb8"]')
    _list_only(converter, tuple[Sha256, ...], '["76:4A:8C:..."]')
    return converter


def _cross_check(policy: PolicyFile) -> Iterator[TomlProblem]:
    """What the types cannot say: every role a user is given must be defined."""
    defined = ", ".join(sorted(policy.roles)) or "none"
    for user, roles in policy.users.items():
        for role in roles:
            if role not in policy.roles:
                yield TomlProblem(
                    ("users", user), f"unknown role {role!r} (defined roles: {defined})", role
                )


def resolve(policy: PolicyFile) -> Policy:
    """Unfold roles into each user's permissions (a check is then one set lookup)."""
    return Policy(
        {
            user: frozenset(
                permission for role in roles for permission in policy.roles[role].permissions
            )
            for user, roles in policy.users.items()
        },
        revoked_serials=frozenset(policy.revoked.serials),
        revoked_sha256=frozenset(policy.revoked.sha256),
    )


def validate(data: Mapping[str, Any]) -> Policy | list[TomlProblem]:
    """The policy ``data`` (parsed TOML) describes, or every problem with it."""
    converter = _converter()
    try:
        raw = converter.structure(dict(data), PolicyFile)
    except Exception as exc:
        return toml_problems(exc, data)
    problems = list(_cross_check(raw))
    return problems or resolve(raw)


def load(path: str | Path) -> Policy:
    """Read and validate a policy file; :class:`ConfigError` says what is wrong and where."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f'{path}: no such policy file (set [plugins.rbac] policy = "..."; a relative '
            f"path is relative to the current directory, {Path.cwd()})"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the policy file is not UTF-8 text: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    result = validate(data)
    if isinstance(result, Policy):
        return result
    raise ConfigError(describe_toml_problems(str(path), text, result))
