"""The RBAC policy: who (a certificate Common Name) has which roles, and what each role may do.

A policy file is TOML::

    [roles.operator]
    permissions = ["submit", "stop:own", "read:own"]

    [users]
    alice = ["operator"]
    "carol@example.com" = ["operator", "viewer"]

The permissions are ``submit``, ``stop:own``, ``stop:all``, ``read:own`` and ``read:all``
(``read`` covers getting a job's status, listing jobs and following their output). "own"
means jobs the principal submitted. A name not under ``[users]`` has no permission at all.

Loading is pure (no engine, no plugin state) and strict: an unknown key, an unknown
permission, a user given a role that is not defined, a wrong type — each is reported with the
file, the line where it can be found cheaply, and the TOML path of the offending value, all
problems at once, so a policy is fixed in one pass.
"""

from __future__ import annotations

import enum
import json
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
import cattrs.errors
import cattrs.v

from worker_core.plugin import ConfigError, Principal, make_converter


class Permission(enum.Enum):
    """One thing a role may do."""

    SUBMIT = "submit"
    STOP_OWN = "stop:own"
    STOP_ALL = "stop:all"
    READ_OWN = "read:own"
    READ_ALL = "read:all"


PERMISSION_NAMES = tuple(sorted(p.value for p in Permission))


@attrs.frozen
class Role:
    """``[roles.NAME]``: the permissions a role grants."""

    permissions: tuple[Permission, ...]


@attrs.frozen
class PolicyFile:
    """The file as written: roles by name, and each user's (Common Name's) role names."""

    roles: dict[str, Role]
    users: dict[str, tuple[str, ...]]


@attrs.frozen
class Policy:
    """The validated policy, resolved for fast checks: each user's permissions, roles unfolded."""

    grants: Mapping[str, frozenset[Permission]] = attrs.field(factory=dict)

    def permissions(self, principal: Principal) -> frozenset[Permission]:
        """What ``principal`` may do; nothing for a name the policy does not list."""
        return self.grants.get(principal.name, frozenset())


# -------------------------------------------------------------------------------------------
# structuring and validation
# -------------------------------------------------------------------------------------------

PathPart = str | int


@attrs.frozen
class Problem:
    """One thing wrong with a policy, at a TOML path; ``value`` helps find its line."""

    path: tuple[PathPart, ...]
    message: str
    value: object = None


class _BadValue(ValueError):
    """A value error that carries the offending value, so its line can be found."""

    def __init__(self, message: str, value: object) -> None:
        super().__init__(message)
        self.value = value


def _structure_permission(value: Any, _: type[Any]) -> Permission:
    # A hook of our own instead of cattrs' enum handling, whose message ("'stopp' is not a
    # valid Permission") names neither the choices nor the file's vocabulary.
    if isinstance(value, str):
        try:
            return Permission(value)
        except ValueError:
            pass
    raise _BadValue(
        f"unknown permission {value!r} (expected one of: {', '.join(PERMISSION_NAMES)})", value
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


def _converter() -> cattrs.Converter:
    # The project's converter: unknown keys are errors and scalars are not coerced.
    converter = make_converter()
    converter.register_structure_hook(Permission, _structure_permission)
    _list_only(converter, tuple[Permission, ...], '["submit", "read:own"]')
    _list_only(converter, tuple[str, ...], '["operator"]')
    return converter


def _walk(exc: BaseException, path: tuple[PathPart, ...]) -> Iterator[Problem]:
    """Flatten cattrs' nested exception groups into problems with structured paths.

    The same traversal as ``cattrs.transform_error``, which only renders paths as strings
    (``$.users['bob']``); a structured path renders the way TOML spells it and lets the line
    be found.
    """
    if isinstance(exc, cattrs.IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _walk(sub, (*path, note.index))
        for sub in without:
            yield from _walk(sub, path)
    elif isinstance(exc, cattrs.ClassValidationError):
        class_notes, class_without = exc.group_exceptions()
        for sub, class_note in class_notes:
            if isinstance(sub, KeyError):
                yield Problem((*path, class_note.name), "required key missing")
            else:
                yield from _walk(sub, (*path, class_note.name))
        for sub in class_without:
            yield from _walk(sub, path)
    elif isinstance(exc, cattrs.errors.ForbiddenExtraKeysError):
        expected = ", ".join(a.name for a in attrs.fields(exc.cl))
        for key in sorted(exc.extra_fields):
            yield Problem((*path, key), f"unknown key {key!r} (expected: {expected})")
    elif isinstance(exc, _BadValue):
        yield Problem(path, str(exc), exc.value)
    elif isinstance(exc, ValueError | TypeError) and str(exc):
        yield Problem(path, str(exc))
    else:
        yield Problem(path, cattrs.v.format_exception(exc, None))


def _cross_check(policy: PolicyFile) -> Iterator[Problem]:
    """What the types cannot say: every role a user is given must be defined."""
    defined = ", ".join(sorted(policy.roles)) or "none"
    for user, roles in policy.users.items():
        for role in roles:
            if role not in policy.roles:
                yield Problem(
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
        }
    )


def validate(data: Mapping[str, Any]) -> Policy | list[Problem]:
    """The policy ``data`` (parsed TOML) describes, or every problem with it."""
    converter = _converter()
    try:
        raw = converter.structure(dict(data), PolicyFile)
    except Exception as exc:
        return list(_walk(exc, ()))
    problems = list(_cross_check(raw))
    return problems or resolve(raw)


# -------------------------------------------------------------------------------------------
# reporting
# -------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# One key of a dotted key: bare, "basic string" or 'literal string'.
_KEY_PART = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*""")


def format_path(path: Sequence[PathPart]) -> str:
    """A path the way TOML writes it: ``users."carol@example.com"``, ``roles.x.permissions[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{key}" if out else key
    return out or "(top level)"


def _parse_dotted_key(text: str) -> tuple[str, ...] | None:
    parts: list[str] = []
    pos = 0
    while True:
        match = _KEY_PART.match(text, pos)
        if match is None:
            return None
        bare, basic, literal = match.groups()
        if basic is not None:
            try:
                basic = json.loads(f'"{basic}"')
            except ValueError:
                return None
        parts.append(bare if bare is not None else basic if basic is not None else literal)
        pos = match.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            return None
        pos += 1


def _key_lines(text: str) -> Iterator[tuple[int, tuple[str, ...], bool]]:
    """``(line number, full key path, is a table header)`` for each line that defines a key.

    A cheap, line-based reading that knows table headers and ``key = value`` lines; lines
    inside multi-line values are skipped as long as they do not look like either. Good
    enough to point at a line; the real parsing is tomllib's.
    """
    table: tuple[str, ...] = ()
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            inner = stripped.lstrip("[")
            end = inner.find("]")
            header = _parse_dotted_key(inner[:end]) if end >= 0 else None
            if header is not None:
                table = header
                yield lineno, table, True
            continue
        key_text, eq, _ = stripped.partition("=")
        if eq and not stripped.startswith("#"):
            key = _parse_dotted_key(key_text)
            if key is not None:
                yield lineno, (*table, *key), False


def find_line(text: str, problem: Problem) -> int | None:
    """The line a problem is on, as close as a cheap scan can tell, or None."""
    keys = tuple(p for p in problem.path if isinstance(p, str))
    lines = list(_key_lines(text))
    best: tuple[int, int] | None = None  # (matched depth, line)
    for lineno, key, _ in lines:
        if keys[: len(key)] == key and (best is None or len(key) > best[0]):
            best = (len(key), lineno)
    if best is None:
        return None
    depth, lineno = best
    if depth == len(keys) and isinstance(problem.value, str):
        # A bad item in an array may sit on a later line of a multi-line array: look for it
        # up to the next key.
        following = [n for n, _, _ in lines if n > lineno]
        stop = following[0] if following else len(text.splitlines()) + 1
        source = text.splitlines()
        for n in range(lineno, stop):
            if any(q in source[n - 1] for q in (json.dumps(problem.value), f"'{problem.value}'")):
                return n
    return lineno


def describe(source: str, text: str, problems: Sequence[Problem]) -> str:
    """One line per problem: ``policy.toml:7: roles.operator.permissions[1]: unknown ...``."""
    lines = []
    for problem in problems:
        lineno = find_line(text, problem)
        where = f"{source}:{lineno}" if lineno is not None else source
        lines.append(f"{where}: {format_path(problem.path)}: {problem.message}")
    return "\n".join(lines)


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
    raise ConfigError(describe(str(path), text, result))
