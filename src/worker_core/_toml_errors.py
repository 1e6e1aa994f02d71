"""Problems in a TOML file a person wrote, reported as ``file:line: key.path: message``.

cattrs reports a failure to structure data as nested exception groups. :func:`toml_problems`
flattens them into :class:`TomlProblem` values whose key path is structured (not a string),
:func:`find_line` finds the line a path is on with a cheap scan of the file's text, and
:func:`describe_toml_problems` renders one line per problem. The configuration file
(``Config.load``) and the rbac policy file both report through here, so a typo in either
names its line the same way::

    server.toml:7: plugins.cgroups.default_pids_max: expected int, got str '1024'
    policy.toml:2: roles.operator.permissions[1]: unknown permission 'stopp' (...)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import cattrs
import cattrs.errors
import cattrs.v

#: One step of a key path: a key of a table, or an index into an array.
PathPart = str | int


@attrs.frozen
class TomlProblem:
    """One thing wrong in a TOML file, at a key path.

    ``value``, when it is a string, helps find the line of an item of a multi-line array.
    """

    path: tuple[PathPart, ...]
    message: str
    value: object = None


# -------------------------------------------------------------------------------------------
# from cattrs' exceptions to problems
# -------------------------------------------------------------------------------------------


def _value_at(data: object, path: Sequence[PathPart]) -> object:
    """The value ``path`` names in ``data`` (parsed TOML), or None where there is none."""
    for part in path:
        if isinstance(part, int):
            if not (isinstance(data, list) and 0 <= part < len(data)):
                return None
            data = data[part]
        elif isinstance(data, Mapping) and part in data:
            data = data[part]
        else:
            return None
    return data


def _walk(exc: BaseException, path: tuple[PathPart, ...]) -> Iterator[TomlProblem]:
    """The same traversal as ``cattrs.transform_error``, which renders paths only as strings
    (``$.users['bob']``); a structured path renders the way TOML spells it and lets the line
    be found."""
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
                yield TomlProblem((*path, class_note.name), "required key missing")
            else:
                yield from _walk(sub, (*path, class_note.name))
        for sub in class_without:
            yield from _walk(sub, path)
    elif isinstance(exc, cattrs.errors.ForbiddenExtraKeysError):
        expected = ", ".join(a.name for a in attrs.fields(exc.cl))
        for key in sorted(exc.extra_fields):
            yield TomlProblem((*path, key), f"unknown key {key!r} (expected: {expected})")
    elif isinstance(exc, ValueError | TypeError) and str(exc):
        # A validator's or a strict structure hook's own message, kept as written.
        yield TomlProblem(path, str(exc))
    else:
        yield TomlProblem(path, cattrs.v.format_exception(exc, None))


def toml_problems(
    exc: BaseException, data: Mapping[str, Any], path: Sequence[PathPart] = ()
) -> list[TomlProblem]:
    """Every problem ``exc`` (raised structuring ``data``) reports, each at its key path.

    ``path`` is where ``data`` sits in the file (``("plugins", "cgroups")`` for a plugin's
    section), so the problems' paths are the file's. Each problem carries the offending value
    where the data has one, to find its line.
    """
    prefix = tuple(path)
    return [
        attrs.evolve(
            problem,
            path=(*prefix, *problem.path),
            value=problem.value if problem.value is not None else _value_at(data, problem.path),
        )
        for problem in _walk(exc, ())
    ]


# -------------------------------------------------------------------------------------------
# finding the line, and the report
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


def _key_lines(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """``(line number, full key path)`` for each line that opens a table or sets a key.

    A cheap, line-based reading that knows table headers and ``key = value`` lines; lines
    inside multi-line values are skipped as long as they look like neither. Good enough to
    point at a line; the real parsing is tomllib's.
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
                yield lineno, table
            continue
        key_text, eq, _ = stripped.partition("=")
        if eq and not stripped.startswith("#"):
            key = _parse_dotted_key(key_text)
            if key is not None:
                yield lineno, (*table, *key)


def find_line(text: str, problem: TomlProblem) -> int | None:
    """The line ``problem`` is on, as close as a cheap scan can tell, or None.

    The line of the longest key path that leads to the problem's; for a string value, the
    line holding that value if it sits on a later line of a multi-line array.
    """
    keys = tuple(p for p in problem.path if isinstance(p, str))
    lines = list(_key_lines(text))
    best: tuple[int, int] | None = None  # (matched depth, line)
    for lineno, key in lines:
        if keys[: len(key)] == key and (best is None or len(key) > best[0]):
            best = (len(key), lineno)
    if best is None:
        return None
    depth, lineno = best
    if depth == len(keys) and isinstance(problem.value, str):
        following = [n for n, _ in lines if n > lineno]
        source = text.splitlines()
        stop = following[0] if following else len(source) + 1
        quoted = (json.dumps(problem.value), f"'{problem.value}'")
        for n in range(lineno, stop):
            if any(q in source[n - 1] for q in quoted):
                return n
    return lineno


def describe_toml_problems(source: str, text: str, problems: Sequence[TomlProblem]) -> str:
    """One line per problem, ``source:line: key.path: message`` (``source: ...`` when the
    line cannot be found), in the order given."""
    lines = []
    for problem in problems:
        lineno = find_line(text, problem)
        where = f"{source}:{lineno}" if lineno is not None else source
        lines.append(f"{where}: {format_path(problem.path)}: {problem.message}")
    return "\n".join(lines)


__all__ = [
    "PathPart",
    "TomlProblem",
    "describe_toml_problems",
    "find_line",
    "format_path",
    "toml_problems",
]
