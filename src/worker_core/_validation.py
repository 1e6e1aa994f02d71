"""Checks every job spec passes before anything is created for it.

Plugins add their own checks through ``validate_spec``; these are the ones every job needs:
a command that can be found, strings the kernel can take, a working directory that exists,
and no field set that no enabled plugin enforces.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterable

from ._errors import InvalidSpec
from ._model import JobSpec

#: The PATH a job gets when its spec does not set one (the server's own is never used).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Which built-in plugin enforces a spec section, for the hint in the error message.
_ENFORCER_HINTS = {"limits": "cgroups", "isolation": "runas"}


def _no_nul(field: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidSpec(field, f"must be a string, got {type(value).__name__}")
    if "\0" in value:
        raise InvalidSpec(field, "contains a NUL byte")
    try:
        # Lone surrogates other than surrogateescape's (which stand for raw bytes) have no
        # byte form the kernel could take.
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidSpec(field, "is not valid text (it has an unpaired surrogate)") from None


def check_strings(spec: JobSpec, max_bytes: int) -> None:
    """NUL bytes and malformed environment names are refused; the total size is capped."""
    if not spec.command:
        raise InvalidSpec("command", "must not be empty")
    _no_nul("command", spec.command)
    for i, arg in enumerate(spec.args):
        _no_nul(f"args[{i}]", arg)
    for key, value in spec.env.items():
        _no_nul(f"env[{key!r}]", key)
        _no_nul(f"env[{key!r}]", value)
        if not key or "=" in key:
            raise InvalidSpec(
                f"env[{key!r}]", "an environment variable name must be non-empty and contain no '='"
            )
    _no_nul("cwd", spec.cwd)
    for key, value in spec.options.items():
        _no_nul(f"options[{key!r}]", key)
        _no_nul(f"options[{key!r}]", value)
    total = sum(len(s.encode("utf-8", "surrogateescape")) + 1 for s in (spec.command, *spec.args))
    total += sum(
        len(k.encode("utf-8", "surrogateescape")) + len(v.encode("utf-8", "surrogateescape")) + 2
        for k, v in spec.env.items()
    )
    if total > max_bytes:
        raise InvalidSpec(
            "args",
            f"command, arguments and environment take {total} bytes; the limit is {max_bytes}",
        )


#: A label key: letters, digits and ``._-/``, starting with a letter or digit (as Kubernetes').
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MAX_LABELS = 32
MAX_LABEL_VALUE = 256
MAX_NAME = 256
MAX_IDEMPOTENCY_KEY = 128


def _printable(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidSpec(field, f"must be at most {limit} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidSpec(field, "must not contain control characters")


def check_labels(spec: JobSpec) -> None:
    """The job's name and labels: short, printable, label keys of a fixed syntax."""
    _printable("name", spec.name, MAX_NAME)
    if len(spec.labels) > MAX_LABELS:
        raise InvalidSpec("labels", f"at most {MAX_LABELS} labels, got {len(spec.labels)}")
    for key, value in spec.labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise InvalidSpec(
                f"labels[{key!r}]",
                "a label key is 1-63 letters, digits or ._-/ starting with a letter or digit",
            )
        _printable(f"labels[{key!r}]", value, MAX_LABEL_VALUE)


def check_begin(spec: JobSpec) -> None:
    begin = spec.begin_at
    if begin is None:
        return
    if isinstance(begin, bool) or not isinstance(begin, int | float) or not math.isfinite(begin):
        raise InvalidSpec("begin_at", f"must be a time in seconds since the epoch, got {begin!r}")
    if begin < 0:
        raise InvalidSpec("begin_at", f"must not be before 1970, got {begin}")


def check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise InvalidSpec("idempotency_key", "must be a non-empty string")
    _printable("idempotency_key", key, MAX_IDEMPOTENCY_KEY)


def job_path(spec: JobSpec) -> str:
    return spec.env.get("PATH", DEFAULT_PATH)


def resolve_cwd(spec: JobSpec) -> str:
    if not os.path.isabs(spec.cwd):
        raise InvalidSpec("cwd", f"must be an absolute path, got {spec.cwd!r}")
    if not os.path.exists(spec.cwd):
        raise InvalidSpec("cwd", f"{spec.cwd!r} does not exist")
    return spec.cwd


def resolve_command(spec: JobSpec, cwd: str) -> str:
    """The absolute path to exec. A bare name is looked up on the job's PATH, not the server's.

    An absolute path is passed through as is: whether it can be exec'd is the kernel's call at
    start time, and a failure there ends the job in FAILED_TO_START with the kernel's reason.
    """
    command = spec.command
    if os.path.isabs(command):
        return command
    if "/" in command:
        return os.path.normpath(os.path.join(cwd, command))
    found = shutil.which(command, path=job_path(spec))
    if found is None:
        raise InvalidSpec("command", f"{command!r} not found on the job's PATH ({job_path(spec)})")
    return os.path.abspath(found)


def check_claimed(spec: JobSpec, claimed: Iterable[str]) -> None:
    """Refuse a spec that sets a field no enabled plugin enforces: a limit is never ignored."""
    claimed = set(claimed)
    wanted = [
        *spec.limits.set_fields(),
        *spec.isolation.set_fields(),
        *(f"options.{k}" for k in spec.options),
    ]
    for field in wanted:
        if field in claimed:
            continue
        section, _, rest = field.partition(".")
        if section == "options":
            plugin = rest.partition(".")[0]
            raise InvalidSpec(
                field, f"no enabled plugin takes this option (is the {plugin!r} plugin enabled?)"
            )
        hint = _ENFORCER_HINTS.get(section)
        raise InvalidSpec(
            field,
            "is set but no enabled plugin enforces it" + (f" (enable {hint!r})" if hint else ""),
        )
