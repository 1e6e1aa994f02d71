"""Configuration: the engine's own settings and one validated section per plugin.

A config file is TOML::

    [engine]
    stop_grace = 10.0

    [plugins.cgroups]
    parent = "worker"

Each plugin reads its section in ``configure`` with :meth:`Config.section`, which
structures it into the plugin's attrs class. An error names where to look: for a file read
by :meth:`Config.load`, its line and key (``server.toml:7: plugins.cgroups.parent: ...``);
for a configuration built in code, the key (``... @ $.plugins.cgroups.parent``).
"""

from __future__ import annotations

import inspect
import re
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
import cattrs.v
from cattrs.strategies import configure_union_passthrough

from ._errors import ConfigError
from ._toml_errors import TomlProblem, describe_toml_problems, toml_problems

T = TypeVar("T")


def _strict(kind: type[Any]) -> Any:
    def structure(value: Any, _: type[Any]) -> Any:
        # cattrs would coerce ("yes" -> True, 1024 -> "1024", "abc" -> ['a','b','c']); a
        # config file with the wrong type is more likely a mistake than a wish.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    return structure


def make_converter() -> cattrs.Converter:
    """The project's converter: unknown keys are errors and types are not coerced."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, _strict(kind))
    # Unions of plain types (``int | str``: "1024" or 1024) are checked by isinstance.
    configure_union_passthrough(int | float | str | bool | None, converter)
    return converter


def _describe(exc: BaseException, kind: type[Any] | None) -> str:
    # Keep the message a validator or a strict hook wrote; cattrs' default drops it.
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, kind)


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _share(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be more than 0 and at most 1, got {value}")


@attrs.frozen
class EngineSettings:
    """The engine's own settings (section ``[engine]``)."""

    #: Seconds between SIGTERM and SIGKILL when a stop does not name a grace period.
    stop_grace: float = attrs.field(default=10.0, validator=_non_negative)
    #: Seconds a stop waits for the job to die after SIGKILL before giving up waiting.
    kill_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    #: Seconds to keep reading output after the main process exits, if a pipe stays open.
    output_linger: float = attrs.field(default=2.0, validator=_non_negative)
    #: Seconds to wait for the launcher to start or answer a spawn request.
    launcher_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    #: Launcher processes at most (each forks jobs; more spawn in parallel on more cores).
    #: One starts with the engine, the others when spawns overlap. 0: one per CPU, up to 8.
    #: Jobs that may hold no capability (runas) have as many again, started at the first.
    launchers: int = attrs.field(default=0, validator=_non_negative)
    #: Finished jobs kept (records and output); past it the oldest are removed. 0: no limit.
    max_finished_jobs: int = attrs.field(default=10_000, validator=_non_negative)
    #: Seconds a finished job is kept after it ended (default 30 days); 0 keeps them forever.
    max_finished_age: float = attrs.field(default=30 * 86400.0, validator=_non_negative)
    #: Bytes of output kept for all finished jobs together (default 10 GiB); past it the
    #: oldest finished jobs are removed. 0: no limit.
    max_finished_output_bytes: int = attrs.field(default=10 << 30, validator=_non_negative)
    #: Jobs running at once; more wait QUEUED (reason running_cap). 0: no cap.
    max_running: int = attrs.field(default=256, validator=_non_negative)
    #: Jobs of one owner running at once (reason owner_cap). 0: no cap.
    max_running_per_owner: int = attrs.field(default=0, validator=_non_negative)
    #: Share of the host's memory that running jobs' memory maximums may add up to.
    memory_budget_share: float = attrs.field(default=0.9, validator=_share)
    #: Share of the host's CPUs that running jobs' CPU fractions may add up to.
    cpu_budget_share: float = attrs.field(default=1.0, validator=_share)
    #: Bytes a job without a memory limit counts against the memory budget.
    default_memory_reservation: int = attrs.field(default=0, validator=_non_negative)
    #: CPUs a job without a CPU limit counts against the CPU budget.
    default_cpu_reservation: float = attrs.field(default=0.0, validator=_non_negative)
    #: Directory of the engine's durable state (job records, output files, the lock); made
    #: 0700 if missing. None: nothing is kept on disk (the library's default).
    state_dir: str | None = None
    #: Upper bound on the bytes of command, arguments and environment of one job.
    max_spec_bytes: int = attrs.field(default=1 << 20, validator=_non_negative)


def _format_error(prefix: str, exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError | ValueError | TypeError):
        lines = (
            cattrs.transform_error(exc, path=prefix, format_exception=_describe)
            if isinstance(exc, cattrs.BaseValidationError)
            else [f"{exc} @ {prefix}"]
        )
        return "; ".join(lines)
    return f"{exc} @ {prefix}"


def _shown(path: Path) -> str:
    """``path`` as a user would write it: relative to the current directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):  # elsewhere, or the current directory is gone
        return str(path)


def _file_problems(data: Mapping[str, Any]) -> list[TomlProblem]:
    """Everything wrong with a config file's top level and ``[engine]``, all at once.

    Plugin sections are only checked for shape here: each plugin validates its own in
    ``configure`` (:meth:`Config.section`), when the engine starts.
    """
    problems = [
        TomlProblem((key,), f"unknown key {key!r} (expected: engine, plugins)")
        for key in sorted(set(data) - {"engine", "plugins"})
    ]
    engine = data.get("engine", {})
    if not isinstance(engine, Mapping):
        problems.append(TomlProblem(("engine",), "must be a table: [engine]"))
    else:
        try:
            make_converter().structure(dict(engine), EngineSettings)
        except Exception as exc:
            problems += toml_problems(exc, engine, ("engine",))
    plugins = data.get("plugins", {})
    if not isinstance(plugins, Mapping):
        problems.append(
            TomlProblem(("plugins",), "must hold one table per plugin, e.g. [plugins.cgroups]")
        )
    else:
        problems += [
            TomlProblem(("plugins", name), f"must be a table: [plugins.{name}]")
            for name, section in plugins.items()
            if not isinstance(section, Mapping)
        ]
    return problems


@attrs.frozen
class Config:
    """Parsed configuration. ``plugins`` maps a plugin name to its raw (unvalidated) section."""

    engine: EngineSettings = attrs.field(factory=EngineSettings)
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: The file this configuration was read from, if any.
    source: Path | None = None
    #: The text of that file as it was read, so an error can name the line of a key.
    source_text: str | None = attrs.field(default=None, repr=False, eq=False)

    def resolve_path(self, value: str | Path) -> Path:
        """A path from the configuration: relative ones are relative to the config file's
        directory (the current directory for a configuration built in code)."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    def section(self, plugin: str, cls: type[T]) -> T:
        """Plugin ``plugin``'s section, structured into ``cls`` (defaults where absent).

        :class:`ConfigError` names every problem: with the file's line and key
        (``server.toml:7: plugins.cgroups.default_pids_max: expected int, got str '1024'``)
        for a configuration read by :meth:`load`, else as ``... @ $.plugins.cgroups.key``.
        """
        raw = self.plugins.get(plugin, {})
        try:
            return make_converter().structure(dict(raw), cls)
        except Exception as exc:
            if self.source is not None and self.source_text is not None:
                problems = toml_problems(exc, raw, ("plugins", plugin))
                message = describe_toml_problems(_shown(self.source), self.source_text, problems)
                raise ConfigError(message) from exc
            raise ConfigError(_format_error(f"$.plugins.{plugin}", exc)) from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Config:
        unknown = set(data) - {"engine", "plugins"}
        if unknown:
            raise ConfigError(
                f"unknown top-level section(s): {', '.join(sorted(unknown))} (expected engine, plugins)"
            )
        try:
            engine = make_converter().structure(dict(data.get("engine", {})), EngineSettings)
        except Exception as exc:
            raise ConfigError(_format_error("$.engine", exc)) from exc
        plugins = data.get("plugins", {})
        if not isinstance(plugins, Mapping) or not all(
            isinstance(v, Mapping) for v in plugins.values()
        ):
            raise ConfigError("[plugins] must hold one table per plugin, e.g. [plugins.cgroups]")
        return cls(engine=engine, plugins={k: dict(v) for k, v in plugins.items()})

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a TOML config file.

        :class:`ConfigError` names the file, and for a wrong key or value its line and key,
        one line per problem (``server.toml:3: engine.stop_grace: expected float, got str
        '10'``). Plugin sections are checked when the engine starts, the same way.
        """
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read the config file: {exc.strerror or exc}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: the config file is not UTF-8 text: {exc}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        source = path.absolute()
        problems = _file_problems(data)
        if problems:
            raise ConfigError(describe_toml_problems(_shown(source), text, problems))
        return attrs.evolve(cls.from_mapping(data), source=source, source_text=text)


# ---------------------------------------------------------------------------------------------
# the configuration reference (`worker serve --help`, docs/CONFIGURATION.md)
# ---------------------------------------------------------------------------------------------


def _field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: its ``#:`` comment lines, else a ``- ``name``: ...`` bullet
    of the class docstring (the two conventions the project's settings classes use)."""
    docs: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        source = ""
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        pending = []
    bullet = re.compile(r"^\s*- ``(\w+)``: (.*)$")
    current: str | None = None
    for line in (inspect.getdoc(cls) or "").splitlines():
        found = bullet.match(line)
        if found:
            current = found.group(1)
            docs.setdefault(current, found.group(2).strip())
        elif current and line.startswith("  ") and line.strip():
            if not docs[current].endswith(line.strip()):
                docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, list | tuple) and not value:
        return "[]"
    return None


def describe_section(section: str, cls: type) -> str:
    """A TOML section of ``cls``'s keys with their defaults, each under its documentation."""
    lines = [f"[{section}]"]
    docs = _field_docs(cls)
    for field in attrs.fields(cls):
        doc = docs.get(field.name, "").replace("``", "")
        if doc:
            lines.extend(f"# {part}" for part in textwrap.wrap(doc, 88))
        default: Any = field.default
        if hasattr(default, "factory") and hasattr(default, "takes_self"):  # an attrs.Factory
            default = default.factory()
        rendered = _toml_value(None if default is attrs.NOTHING else default)
        if default is attrs.NOTHING:
            lines.append(f"{field.name} = ...  # required")
        elif rendered is None:
            lines.append(f"# {field.name} =  (not set by default)")
        else:
            lines.append(f"{field.name} = {rendered}")
    return "\n".join(lines)
