"""Finding, loading and calling plugins.

Built-in plugins and third-party ones resolve through one path: the ``worker.plugins``
entry-point group. An entry point names a module (registered as is) or a class (instantiated
with no arguments, for plugins that keep state). One plugin manager per engine; nothing is
loaded at import time.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from . import _hookspecs as hookspecs
from ._errors import PluginError
from ._hookcalls import HookFailed, WorkerPluginManager, trace_requested

if TYPE_CHECKING:
    import click

    from ._config import Config
    from ._engine import Engine
    from ._executor import Executor
    from ._jobstore import JobStore
    from ._model import Action, ExitResult, Job, JobSpec, JobState, Principal
    from ._output import Chunk, OutputStore
    from ._plan import SpawnPlan

log = logging.getLogger("worker.plugins")

ENTRY_POINT_GROUP = "worker.plugins"

#: The distribution (``pip install confined-worker``) that ships the engine and the built-in
#: plugins; the program it installs is ``worker``. (``worker`` on PyPI is an unrelated package.)
DISTRIBUTION = "confined-worker"

#: Plugins every engine loads unless disabled with ``no:NAME`` (as pytest's ``-p no:NAME``).
DEFAULT_PLUGINS: tuple[str, ...] = ("memory",)


@attrs.frozen
class PluginInfo:
    """An installed plugin as found through its entry point."""

    name: str
    value: str  # "module" or "module:attr"
    distribution: str | None
    version: str | None


def installed_plugins() -> dict[str, PluginInfo]:
    """Every plugin installed under the ``worker.plugins`` entry-point group, by name.

    The entry points are scanned once per process (the first call) and remembered: every
    engine, the command line and ``worker plugins`` ask this, and a scan reads every
    installed distribution's metadata. :func:`rescan_plugins` forgets the scan, for a
    process that installs a plugin while it runs.
    """
    global _scanned
    with _scan_lock:
        if _scanned is None:
            _scanned = _scan(ENTRY_POINT_GROUP, sys.path)
        return dict(_scanned)


def rescan_plugins() -> None:
    """Forget the scan :func:`installed_plugins` remembers; the next call scans again."""
    global _scanned
    with _scan_lock:
        _scanned = None


_scanned: dict[str, PluginInfo] | None = None
_scan_lock = threading.Lock()

_METADATA_DIR = re.compile(r"(?P<name>[^-]+)(?:-(?P<version>[^-]+))?.*\.(?:dist|egg)-info")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _scan(group: str, path: Sequence[str]) -> dict[str, PluginInfo]:
    """The entry points of ``group`` that :func:`importlib.metadata.entry_points` would give,
    read straight from the metadata directories on ``path``.

    The same rules, without importing :mod:`importlib.metadata` (tens of milliseconds with
    its email parser, paid by every ``worker`` command): distributions in ``path`` order, the
    first of a name wins, and within it the first entry point of a name. Anything other than a
    directory on the path (a zip file) is left to :mod:`importlib.metadata` itself.
    """
    found: dict[str, PluginInfo] = {}
    seen: set[str] = set()
    for entry in path:
        directory = entry or "."
        if os.path.isdir(directory):
            for dist in _directory_distributions(directory, seen):
                for name, value in dist.entry_points(group):
                    found.setdefault(name, PluginInfo(name, value, dist.name, dist.version))
        elif os.path.isfile(directory):
            import importlib.metadata

            for meta in importlib.metadata.distributions(path=[directory]):
                key = _normalize(meta.metadata["Name"] or "")
                if not key or key in seen:
                    continue
                seen.add(key)
                for ep in meta.entry_points.select(group=group):
                    found.setdefault(
                        ep.name, PluginInfo(ep.name, ep.value, meta.name, meta.version)
                    )
    return found


@attrs.frozen
class _Distribution:
    """A ``*.dist-info`` or ``*.egg-info`` directory: its name, version and entry points."""

    directory: str
    name: str | None
    version: str | None

    def entry_points(self, group: str) -> list[tuple[str, str]]:
        """``(name, value)`` of each entry point of ``group`` in ``entry_points.txt``."""
        try:
            with open(os.path.join(self.directory, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return []
        points: list[tuple[str, str]] = []
        section = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section == group and "=" in line:
                name, _, value = line.partition("=")
                points.append((name.strip(), value.strip()))
        return points


def _directory_distributions(directory: str, seen: set[str]) -> Iterator[_Distribution]:
    """The distributions whose metadata is in ``directory`` and whose name is not in ``seen``
    (which this adds them to), in the order :mod:`importlib.metadata` finds them."""
    try:
        # As importlib.metadata: every dist-info before any egg-info.
        names = sorted(os.listdir(directory), key=lambda n: n.lower().endswith(".egg-info"))
    except OSError:
        return
    for entry in names:
        match = _METADATA_DIR.fullmatch(entry.lower())
        full = os.path.join(directory, entry)
        # A distribution is known by the name its directory is named after.
        if match is None or _normalize(match["name"]) in seen or not os.path.isdir(full):
            continue
        seen.add(_normalize(match["name"]))
        headers = _metadata_headers(full)
        yield _Distribution(full, headers.get("name"), headers.get("version") or match["version"])


def _metadata_headers(directory: str) -> dict[str, str]:
    """``Name`` and ``Version`` from a distribution's METADATA (or an egg's PKG-INFO), read
    up to the end of the headers only."""
    headers: dict[str, str] = {}
    for filename in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(directory, filename), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break
                    key, sep, value = line.partition(":")
                    if sep and key.lower() in ("name", "version"):
                        headers.setdefault(key.lower(), value.strip())
                    if len(headers) == 2:
                        break
        except OSError:
            continue
        return headers
    return headers


def parse_plugin_names(names: Iterable[str] | str | None) -> list[str]:
    """``"cgroups,netns"`` or a list of names into the full list to load, defaults included.

    ``no:NAME`` removes a default (``no:memory`` when another plugin stores output).
    """
    if names is None:
        requested: list[str] = []
    elif isinstance(names, str):
        requested = [n.strip() for n in names.split(",") if n.strip()]
    else:
        requested = [n.strip() for n in names if n.strip()]
    disabled = {n[3:] for n in requested if n.startswith("no:")}
    wanted = [n for n in requested if not n.startswith("no:")]
    result: list[str] = []
    for name in [*DEFAULT_PLUGINS, *wanted]:
        if name not in disabled and name not in result:
            result.append(name)
    return result


def _instantiate(name: str, value: str) -> object:
    module_name, _, attr = value.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except Exception as exc:
        raise PluginError(
            f"plugin {name!r}: cannot import {value!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(f"plugin {name!r}: cannot create {value!r}: {exc}") from exc
    return obj


def config_sections() -> list[tuple[str, type, PluginInfo]]:
    """Installed plugins that declare a ``config_class``: (name, class, where it comes from).

    A plugin documents its ``[plugins.NAME]`` section by setting ``config_class`` to the attrs
    class it structures it into; one that fails to import is skipped (``worker plugins``
    reports it).
    """
    sections = []
    for name, info in sorted(installed_plugins().items()):
        try:
            plugin = _instantiate(name, info.value)
        except PluginError:
            continue
        cls = getattr(plugin, "config_class", None)
        if isinstance(cls, type) and attrs.has(cls):
            sections.append((name, cls, info))
    return sections


def config_reference(distribution: str | None = None) -> str:
    """Every configuration section with its keys, defaults and documentation, as TOML.

    ``distribution`` limits the plugins to one distribution (:data:`DISTRIBUTION`: the
    built-ins).
    """
    from ._config import EngineSettings, describe_section

    parts = ["# The engine's own settings.\n" + describe_section("engine", EngineSettings)]
    for name, cls, info in config_sections():
        if distribution is not None and info.distribution != distribution:
            continue
        source = f"{info.distribution} {info.version}" if info.distribution else info.value
        parts.append(f"# Plugin {name!r} ({source}).\n" + describe_section(f"plugins.{name}", cls))
    return "\n\n".join(parts) + "\n"


def make_plugin_manager() -> WorkerPluginManager:
    """A plugin manager with every hook spec; nothing registered yet."""
    pm = WorkerPluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(pm: pluggy.PluginManager, names: Sequence[str | object]) -> None:
    """Register plugins given by name (resolved through entry points) or as objects.

    Raises :class:`PluginError` naming the plugin for an unknown name, an import error, or a
    hook implementation that matches no spec or has arguments its spec does not offer.
    """
    installed = installed_plugins()
    for item in names:
        if isinstance(item, str):
            if pm.has_plugin(item):
                continue
            info = installed.get(item)
            if info is None:
                known = ", ".join(sorted(installed)) or "none"
                raise PluginError(f"unknown plugin {item!r} (installed: {known})")
            register(pm, _instantiate(item, info.value), item)
        else:
            register(pm, item, getattr(item, "name", None) or None)
    check(pm)


def register(pm: pluggy.PluginManager, plugin: object, name: str | None = None) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name or plugin!r}: {exc}") from exc
    except ValueError as exc:  # already registered under that name
        raise PluginError(f"plugin {name or plugin!r}: {exc}") from exc


def check(pm: pluggy.PluginManager) -> None:
    """Fail loudly on a misspelt hook (``check_pending``), naming the plugin."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin_name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise PluginError(f"plugin {plugin_name!r}: {exc}") from exc


def plugin_hooks(name: str) -> list[str]:
    """Load the installed plugin ``name`` into a manager of its own; the hooks it implements.

    Raises :class:`PluginError` as loading it into an engine would (``worker plugins``).
    """
    pm = make_plugin_manager()
    load_plugins(pm, [name])
    return hook_names(pm.get_plugin(name))


def hook_names(plugin: object) -> list[str]:
    """Names of the hooks a plugin object implements (for ``worker plugins``)."""
    pm = make_plugin_manager()
    return sorted(name for name in dir(plugin) if pm.parse_hookimpl_opts(plugin, name) is not None)


class Hooks:
    """Typed calls into ``pm.hook``, so the engine calls methods rather than ``pm.hook.x(**kw)``.

    Each method is named after the hook it calls. In the isolated hooks (``post_exit``,
    ``on_state_change``, ``on_output``, ``admit``) each implementation runs on its own (see
    :mod:`worker_core._hookcalls`): the observers' methods return what their implementations
    raised instead of raising, and ``admit`` logs it.
    ``WORKER_TRACE_PLUGINS=1`` in the environment when this object is made logs every call.
    """

    def __init__(self, pm: WorkerPluginManager) -> None:
        self._pm = pm
        if trace_requested():
            pm.enable_plugin_trace()

    @property
    def manager(self) -> WorkerPluginManager:
        return self._pm

    def has_authorizer(self) -> bool:
        # A wrapper only observes or adjusts the others' answers (an audit log): it is not an
        # authority, so loading one alone must not turn "no authorizer" into "deny all".
        return any(
            not (i.wrapper or i.hookwrapper) for i in self._pm.hook.authorize.get_hookimpls()
        )

    def configure(self, engine: Engine, config: Config) -> None:
        self._pm.hook.configure(engine=engine, config=config)

    def startup(self, engine: Engine) -> None:
        self._pm.hook.startup(engine=engine)

    def shutdown(self, engine: Engine) -> None:
        self._pm.hook.shutdown(engine=engine)

    def validate_spec(self, spec: JobSpec) -> set[str]:
        claimed: set[str] = set()
        if self._pm.idle("validate_spec"):
            return claimed
        for fields in self._pm.hook.validate_spec(spec=spec):
            if fields:
                claimed.update(fields)
        return claimed

    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        if not self._pm.idle("pre_spawn"):
            self._pm.hook.pre_spawn(job=job, plan=plan)

    def signal_job(self, job: Job, signum: int) -> bool:
        if self._pm.idle("signal_job"):
            return False
        return bool(self._pm.hook.signal_job(job=job, signum=signum))

    def freeze_job(self, job: Job, frozen: bool) -> bool:
        return bool(self._pm.hook.freeze_job(job=job, frozen=frozen))

    def job_usage(self, job: Job) -> dict[str, int | float] | None:
        usage: dict[str, int | float] | None = self._pm.hook.job_usage(job=job)
        return usage

    def admit(self, job: Job) -> str | None:
        """The first reason a plugin gives to keep ``job`` queued, or None. Each
        implementation runs in isolation: one that raises is logged and counts as no answer."""
        reasons, failures = self._pm.call_isolated("admit", job=job)
        for failure in failures:
            log.error("job %s: %s", job.id, failure, exc_info=failure.error)
        for reason in reasons:
            if reason:
                return str(reason)
        return None

    def post_exit(self, job: Job, result: ExitResult) -> list[HookFailed]:
        """Every ``post_exit``, each in isolation: one failing must not skip the others' cleanup."""
        return self._pm.call_isolated("post_exit", job=job, result=result)[1]

    def on_state_change(self, job: Job, previous: JobState | None) -> list[HookFailed]:
        return self._pm.call_isolated("on_state_change", job=job, previous=previous)[1]

    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool:
        answers = self._pm.hook.authorize(principal=principal, action=action, job=job)
        if any(a is False for a in answers):
            return False
        if self.has_authorizer():
            return any(a is True for a in answers)
        return True

    def on_output(self, job: Job, chunk: Chunk) -> list[HookFailed]:
        return self._pm.call_isolated("on_output", job=job, chunk=chunk)[1]

    def output_store(self, engine: Engine) -> OutputStore | None:
        store: OutputStore | None = self._pm.hook.output_store(engine=engine)
        return store

    def executor(self, engine: Engine) -> Executor | None:
        found: Executor | None = self._pm.hook.executor(engine=engine)
        return found

    def job_store(self, engine: Engine) -> JobStore | None:
        store: JobStore | None = self._pm.hook.job_store(engine=engine)
        return store

    def register_commands(self, cli: click.Group) -> None:
        self._pm.hook.register_commands(cli=cli)

    def plugins(self) -> Iterator[tuple[str, object]]:
        for name, plugin in self._pm.list_name_plugin():
            if plugin is not None:
                yield name, plugin

    def serve_transports(self, engine: Engine) -> list[Any]:
        """Every transport the enabled plugins offer ``worker serve`` (their non-None answers)."""
        return list(self._pm.hook.serve_transports(engine=engine))
