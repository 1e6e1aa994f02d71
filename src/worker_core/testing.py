"""Helpers for testing a plugin against a real engine (as pytest's ``pytester`` is for pytest's).

::

    from worker_core import JobSpec
    from worker_core.testing import HookRecorder, running_engine, run_job

    def test_my_plugin_sees_the_exit():
        with running_engine("myplugin") as engine, HookRecorder(engine) as hooks:
            job = run_job(engine, JobSpec("sh", ("-c", "exit 3")))
        assert job.exit_code == 3
        assert hooks.calls("post_exit")[0].kwargs["result"].exit_code == 3

Jobs are real processes and every wait here is bounded: a helper that times out raises
:class:`TimeoutError` naming what it waited for, rather than hanging a test run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from ._config import Config
from ._model import Job, JobSpec, Principal
from ._output import Follower, Stream

if TYPE_CHECKING:
    from ._engine import Engine

#: Short stop and output timings, so closing an engine with a job still running takes about
#: two seconds rather than ten. Any of them can be overridden (``running_engine(stop_grace=5)``).
TEST_ENGINE_SETTINGS: Mapping[str, float] = {
    "stop_grace": 2.0,
    "kill_timeout": 3.0,
    "output_linger": 0.5,
}

#: How long :func:`run_job`, :func:`drain` and :meth:`HookRecorder.wait_for` wait by default.
DEFAULT_TIMEOUT = 30.0


def _merged_config(
    config: Config | Mapping[str, Any] | None, settings: Mapping[str, Any]
) -> Config:
    """``config`` (a Config, or the mapping ``Config.from_mapping`` takes) with the test
    timings and ``settings`` laid over its ``[engine]`` section, validated like a file's."""
    if isinstance(config, Config):
        base: dict[str, Any] = {
            "engine": attrs.asdict(config.engine),
            "plugins": dict(config.plugins),
        }
        overrides = dict(settings)  # a Config given is complete: keep its own timings
    else:
        raw = dict(config or {})
        base = {**raw, "engine": dict(raw.get("engine", {}))}
        overrides = {**TEST_ENGINE_SETTINGS, **base["engine"], **settings}
    merged = Config.from_mapping({**base, "engine": {**base["engine"], **overrides}})
    if isinstance(config, Config):
        merged = attrs.evolve(merged, source=config.source, source_text=config.source_text)
    return merged


@contextlib.contextmanager
def running_engine(
    *plugins: str | object,
    config: Config | Mapping[str, Any] | None = None,
    **engine_settings: Any,
) -> Iterator[Engine]:
    """A started :class:`~worker_core.Engine` with ``plugins``, closed on the way out.

    ``plugins`` are entry-point names (``"rlimits"``, which also proves the packaging) or
    plugin objects, mixed as :class:`~worker_core.Engine` takes them; the defaults
    (``memory``) load unless ``"no:memory"`` is given. ``config`` is a
    :class:`~worker_core.Config` or the mapping :meth:`Config.from_mapping` takes
    (``{"plugins": {"rlimits": {...}}}``). ``engine_settings`` set ``[engine]`` keys; a
    mapping (or no config) gets :data:`TEST_ENGINE_SETTINGS` under them.

    Closing stops every job still running and waits (bounded) for the engine's threads, so
    what an observer recorded is complete once the ``with`` block is left. A
    :class:`~worker_core.ConfigError` or :class:`~worker_core.PluginError` comes out of the
    ``with`` statement itself.
    """
    from ._engine import Engine

    engine = Engine(list(plugins), _merged_config(config, engine_settings))
    try:
        engine.start()
        yield engine
    finally:
        engine.close()


@attrs.frozen
class HookCall:
    """One call of a hook, as the plugin manager made it.

    ``kwargs`` are the hook's arguments (the objects themselves: a ``SpawnPlan`` shows what
    every ``pre_spawn`` wrote into it); ``result`` is what the call returned (a list, or one
    value for a firstresult hook); ``error`` what it raised, if it did. ``plugins`` names the
    implementations called, in the order they ran. For ``post_exit``, ``on_state_change`` and
    ``on_output`` an implementation that raised does not make the call raise: each runs in
    isolation and the engine logs the failure.
    """

    name: str
    kwargs: Mapping[str, Any]
    result: Any
    error: BaseException | None
    plugins: tuple[str, ...]


class HookRecorder:
    """Records every hook call on an engine's plugin manager (``add_hookcall_monitoring``).

    Attach it to an engine (or a plugin manager) and read :meth:`calls`. It records from the
    moment it is made: attach it to an engine that is not started yet to see ``startup``,
    ``job_store`` and ``output_store`` too (``configure`` has fired by then). Calls are
    recorded as they return, from whichever engine thread made them. Use it as a context
    manager, or call :meth:`close`, to stop recording.
    """

    def __init__(self, engine_or_manager: Engine | pluggy.PluginManager) -> None:
        pm = (
            engine_or_manager
            if isinstance(engine_or_manager, pluggy.PluginManager)
            else engine_or_manager.plugin_manager
        )
        self._calls: list[HookCall] = []
        self._changed = threading.Condition()
        self._undo: Callable[[], None] | None = pm.add_hookcall_monitoring(
            self._before, self._after
        )

    def _before(
        self, name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        pass

    def _after(
        self,
        outcome: pluggy.Result[Any],
        name: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, Any],
    ) -> None:
        from ._hookcalls import plugin_label

        call = HookCall(
            name=name,
            kwargs=dict(kwargs),
            result=None if outcome.exception is not None else outcome.get_result(),
            error=outcome.exception,
            plugins=tuple(plugin_label(impl) for impl in reversed(impls)),
        )
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()

    def calls(self, name: str | None = None) -> list[HookCall]:
        """Every recorded call of hook ``name`` (of every hook if None), in the order they
        returned."""
        with self._changed:
            return [c for c in self._calls if name is None or c.name == name]

    def names(self) -> list[str]:
        """The hook of every recorded call, in order: ``["validate_spec", "authorize", ...]``."""
        return [c.name for c in self.calls()]

    def wait_for(
        self,
        name: str,
        where: Callable[[HookCall], bool] = lambda call: True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> HookCall:
        """The first recorded call of ``name`` that ``where`` accepts, waiting for it (observer
        hooks fire on engine threads, possibly after :meth:`Engine.wait` returned).
        Raises :class:`TimeoutError` if none comes within ``timeout`` seconds."""

        def found() -> HookCall | None:
            return next((c for c in self._calls if c.name == name and where(c)), None)

        with self._changed:
            call = self._changed.wait_for(found, timeout)
        if call is None:
            raise TimeoutError(f"no matching {name} call within {timeout:g}s")
        return call

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._changed:
            self._calls.clear()

    def close(self) -> None:
        """Stop recording (what was recorded stays readable)."""
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def __enter__(self) -> HookRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def drain(follower: Follower, timeout: float = DEFAULT_TIMEOUT) -> dict[Stream, bytes]:
    """Read ``follower`` until it ends (the job ended and everything was read); the bytes of
    each stream, both keys always present. The follower is closed on the way out.

    Raises :class:`TimeoutError` if it has not ended within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    parts: dict[Stream, list[bytes]] = {Stream.STDOUT: [], Stream.STDERR: []}
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = {s.value: sum(map(len, p)) for s, p in parts.items()}
                raise TimeoutError(f"the follower did not end within {timeout:g}s (read {got})")
            chunks = follower.read(timeout=remaining)
            if chunks is None:
                return {stream: b"".join(p) for stream, p in parts.items()}
            for chunk in chunks:
                parts[chunk.stream].append(chunk.data)
    finally:
        follower.close()


def run_job(
    engine: Engine,
    spec: JobSpec,
    timeout: float = DEFAULT_TIMEOUT,
    principal: Principal | None = None,
) -> Job:
    """Submit ``spec`` and wait until the job has ended; its final record.

    Raises :class:`TimeoutError` naming the job if it has not ended within ``timeout``
    seconds (the job keeps running; closing the engine stops it). Errors of the submit
    (:class:`~worker_core.InvalidSpec`, :class:`~worker_core.PermissionDenied`) propagate.
    """
    job = engine.submit(spec, principal=principal)
    job = engine.wait(job.id, timeout=timeout, principal=principal)
    if not job.is_finished:
        raise TimeoutError(
            f"job {job.id} ({spec.command}) still {job.state.value} after {timeout:g}s"
        )
    return job


__all__ = [
    "DEFAULT_TIMEOUT",
    "TEST_ENGINE_SETTINGS",
    "HookCall",
    "HookRecorder",
    "drain",
    "run_job",
    "running_engine",
]
