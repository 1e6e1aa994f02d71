"""How hook implementations are called: observer hooks each in isolation, and tracing.

pluggy ends a hook call at the first implementation that raises. For the observer hooks
(``post_exit``, ``on_state_change``, ``on_output``) that would let one broken plugin cost the
others the event (a cgroup never removed, an audit line never written), and for ``admit`` it
would let one broken plugin stall the queue, so every implementation of those
(:data:`ISOLATED_HOOKS`) is *guarded*: its exception is caught and handed to whoever called
:meth:`WorkerPluginManager.call_isolated` (the engine logs it, naming the plugin), it counts
as no answer, and the call goes on to the next implementation. Wrappers are guarded the same way,
so a broken wrapper neither skips the implementations inside it nor ends the call.

The call itself stays one ordinary pluggy call, so new-style wrappers
(``@hookimpl(wrapper=True)``) and old-style ones (``hookwrapper=True``) run around the
implementations as pluggy runs them everywhere else, and ``add_hookcall_monitoring`` and
``enable_tracing`` see every call.

With ``WORKER_TRACE_PLUGINS=1`` in the environment when an engine is made, every
implementation's call is logged on ``worker.plugins.trace`` (and on stderr if logging is not
configured): the hook, the plugin, how long it took and what it returned or raised.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Generator
from typing import Any

import pluggy

#: Hooks whose implementations are each called in isolation: one raising does not keep the
#: others from the call, and counts as no answer. Their specs and ``docs/PLUGIN_GUIDE.md``
#: say so.
ISOLATED_HOOKS = frozenset({"post_exit", "on_state_change", "on_output", "admit"})

#: Set to ``1`` (or ``true``, ``yes``, ``on``) to log every hook call; read when an engine's
#: :class:`~worker_core._plugins.Hooks` is made.
TRACE_VARIABLE = "WORKER_TRACE_PLUGINS"

#: How much of a result's ``repr`` a trace line shows.
TRACE_REPR_LIMIT = 200

log = logging.getLogger("worker.plugins")
trace_log = logging.getLogger("worker.plugins.trace")

Function = Callable[..., Any]


class HookFailed(Exception):
    """An implementation (or wrapper) of an isolated hook raised; the others still ran.

    ``plugin`` is the plugin's name (None when the call failed outside any plugin), ``error``
    what it raised (also the ``__cause__``, so a logged traceback shows where).
    """

    def __init__(self, plugin: str | None, hook: str, error: BaseException) -> None:
        who = f"plugin {plugin!r}: {hook}" if plugin is not None else f"calling {hook}"
        super().__init__(f"{who} raised {type(error).__name__}: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error
        self.__cause__ = error


def trace_requested(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether ``WORKER_TRACE_PLUGINS`` asks for tracing."""
    return environ.get(TRACE_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def plugin_label(impl: pluggy.HookImpl) -> str:
    """The name a person knows the plugin by: its registered name, or for an object
    registered without one (pluggy then names it by ``id``) its ``name`` attribute, its class
    or its module."""
    plugin = impl.plugin
    if impl.plugin_name != str(id(plugin)):
        return impl.plugin_name
    own_name = getattr(plugin, "name", None)
    if isinstance(own_name, str) and own_name:
        return own_name
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return type(plugin).__qualname__


class WorkerPluginManager(pluggy.PluginManager):
    """A pluggy manager that guards the observer hooks' implementations and can trace calls.

    Implementations are instrumented as they are registered, whichever way they are
    registered: the engine's loading or a direct :meth:`register`.
    """

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        # The plugin's own function behind each instrumented implementation, so tracing can be
        # switched on later and still sit inside the guard (it must see what was raised).
        self._originals: dict[pluggy.HookImpl, Function] = {}
        self._tracing = False
        self._local = threading.local()
        self._monitors = 0  # add_hookcall_monitoring calls not undone yet

    @property
    def tracing(self) -> bool:
        return self._tracing

    def register(self, plugin: object, name: str | None = None) -> str | None:
        plugin_name = super().register(plugin, name)
        if plugin_name is not None:
            self._instrument_plugin(plugin)
        return plugin_name

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any | None:
        removed = super().unregister(plugin, name)
        self._originals = {i: f for i, f in self._originals.items() if i.plugin is not removed}
        return removed

    def add_hookcall_monitoring(
        self,
        before: Callable[[str, list[pluggy.HookImpl], dict[str, Any]], None],
        after: Callable[[Any, str, list[pluggy.HookImpl], dict[str, Any]], None],
    ) -> Callable[[], None]:
        undo = super().add_hookcall_monitoring(before, after)  # type: ignore[arg-type]
        self._monitors += 1
        undone = False

        def undo_monitoring() -> None:
            nonlocal undone
            undo()
            if not undone:
                undone = True
                self._monitors -= 1

        return undo_monitoring

    def idle(self, hook_name: str) -> bool:
        """Whether a call of ``hook_name`` now would do nothing anyone could see: it has no
        implementation, and no call monitoring is on (``add_hookcall_monitoring``,
        ``enable_tracing``, :class:`worker_core.testing.HookRecorder`), which sees every
        call, answered or not. The engine skips such calls: most run for every job."""
        return not self._monitors and not getattr(self.hook, hook_name).get_hookimpls()

    def enable_plugin_trace(self) -> None:
        """Log every implementation's call from now on (``WORKER_TRACE_PLUGINS``)."""
        if self._tracing:
            return
        self._tracing = True
        _ensure_trace_output()
        for plugin in self.get_plugins():
            self._instrument_plugin(plugin)

    def call_isolated(self, hook_name: str, **kwargs: Any) -> tuple[list[Any], list[HookFailed]]:
        """Call ``hook_name`` (one of :data:`ISOLATED_HOOKS`) once: the results (pluggy's list
        of non-None answers), and what each raising implementation or wrapper raised, in call
        order. Never raises an ``Exception``. Not called at all when :meth:`idle`."""
        assert hook_name in ISOLATED_HOOKS, hook_name
        if self.idle(hook_name):
            return [], []
        sinks: list[list[HookFailed]] = self._local.__dict__.setdefault("sinks", [])
        failures: list[HookFailed] = []
        results: list[Any] = []
        # A stack, not one slot: an implementation may cause another isolated call on its own
        # thread (an observer that stops a job), whose failures are that call's.
        sinks.append(failures)
        try:
            results = getattr(self.hook, hook_name)(**kwargs)
        except Exception as exc:  # outside every implementation: a monitor, a bad argument
            failures.append(HookFailed(None, hook_name, exc))
        finally:
            sinks.pop()
        return results, failures

    # ---------------------------------------------------------------------------------------
    # instrumentation
    # ---------------------------------------------------------------------------------------

    def _instrument_plugin(self, plugin: object) -> None:
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    self._instrument(caller.name, impl)

    def _instrument(self, hook_name: str, impl: pluggy.HookImpl) -> None:
        original = self._originals.setdefault(impl, impl.function)
        function = original
        if self._tracing:
            function = _traced(hook_name, impl, function)
        if hook_name in ISOLATED_HOOKS:
            function = self._guarded(hook_name, impl, function)
        if function is not impl.function:
            # pluggy calls ``impl.function`` afresh on every call and offers no other seam
            # through which implementations can be isolated inside one call (which is what
            # keeps wrappers and monitoring working); the plugin object itself is untouched.
            impl.function = function  # type: ignore[misc]

    def _guarded(self, hook_name: str, impl: pluggy.HookImpl, function: Function) -> Function:
        def report(error: BaseException) -> None:
            self._report(HookFailed(plugin_label(impl), hook_name, error))

        if impl.wrapper:
            return _guard_wrapper(function, report)
        if impl.hookwrapper:
            return _guard_old_style_wrapper(function, report)

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                report(exc)
                return None

        return guarded

    def _report(self, failure: HookFailed) -> None:
        sinks: list[list[HookFailed]] | None = getattr(self._local, "sinks", None)
        if sinks:
            sinks[-1].append(failure)
        else:  # called straight through ``pm.hook``: nobody collects, so say it here
            log.error("%s", failure, exc_info=failure.error)


def _guard_wrapper(function: Function, report: Callable[[BaseException], None]) -> Function:
    """A new-style wrapper that cannot end the call: what it raises is reported, and the
    implementations inside it run even if it failed before its ``yield``."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        try:
            teardown = function(*args, **kwargs)
            next(teardown)
        except StopIteration:
            report(RuntimeError("the wrapper returned without yielding"))
            return (yield)
        except Exception as exc:
            report(exc)
            return (yield)
        try:
            # The implementations inside are guarded too: this yield does not raise.
            result = yield
        except BaseException:
            teardown.close()
            raise
        try:
            teardown.send(result)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:
            report(exc)
            return result
        teardown.close()
        report(RuntimeError("the wrapper yielded more than once"))
        return result

    return guarded


def _guard_old_style_wrapper(
    function: Function, report: Callable[[BaseException], None]
) -> Function:
    """:func:`_guard_wrapper` for an old-style ``hookwrapper``, which is sent a Result."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Generator[None, Any, None]:
        try:
            teardown = function(*args, **kwargs)
            next(teardown)
        except StopIteration:
            report(RuntimeError("the hookwrapper returned without yielding"))
            yield
            return
        except Exception as exc:
            report(exc)
            yield
            return
        try:
            outcome = yield
        except BaseException:
            teardown.close()
            raise
        try:
            teardown.send(outcome)
        except StopIteration:
            return
        except Exception as exc:
            report(exc)
            return
        teardown.close()
        report(RuntimeError("the hookwrapper yielded more than once"))

    return guarded


# -------------------------------------------------------------------------------------------
# tracing
# -------------------------------------------------------------------------------------------


class _StderrUnlessConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes trace lines to the current ``sys.stderr`` while no handler above the trace
    logger would show them; once the program configures logging (``worker`` does so after
    loading its plugins), those handlers have them and this one stays quiet, so no line
    shows twice."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr (a test's capture replaces it)

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = trace_log.parent
        while logger is not None:
            if logger.handlers:
                return
            if not logger.propagate:
                break
            logger = logger.parent
        super().emit(record)


def _ensure_trace_output() -> None:
    """Make sure trace lines are seen: on stderr while logging is not configured, and at a
    level that lets them through a configured one (asking for a trace is asking to see it)."""
    if not any(isinstance(h, _StderrUnlessConfigured) for h in trace_log.handlers):
        trace_log.addHandler(_StderrUnlessConfigured())
    if trace_log.getEffectiveLevel() > logging.INFO:
        trace_log.setLevel(logging.INFO)


def short_repr(value: object, limit: int = TRACE_REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (a chunk's bytes, a long list)."""
    try:
        text = repr(value)
    except Exception as exc:  # a plugin's own __repr__ may be broken; the trace must not be
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _trace(hook: str, plugin: str, kind: str, started: float, outcome: str) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    trace_log.info(
        "hook=%s plugin=%s kind=%s duration=%.3fms %s", hook, plugin, kind, elapsed_ms, outcome
    )


def _traced(hook_name: str, impl: pluggy.HookImpl, function: Function) -> Function:
    plugin = plugin_label(impl)
    if impl.wrapper or impl.hookwrapper:
        # A wrapper's time is its whole life: its setup, the implementations inside it and its
        # teardown.
        @functools.wraps(function)
        def traced_wrapper(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
            started = time.perf_counter()
            try:
                result = yield from function(*args, **kwargs)
            except BaseException as exc:
                _trace(hook_name, plugin, "wrapper", started, f"raised={short_repr(exc)}")
                raise
            _trace(hook_name, plugin, "wrapper", started, f"result={short_repr(result)}")
            return result

        return traced_wrapper

    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:
            _trace(hook_name, plugin, "impl", started, f"raised={short_repr(exc)}")
            raise
        _trace(hook_name, plugin, "impl", started, f"result={short_repr(result)}")
        return result

    return traced
