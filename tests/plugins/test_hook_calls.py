"""How hooks are called: the observer hooks each in isolation, wrappers around them the
pluggy way, hook-call monitoring and ``WORKER_TRACE_PLUGINS``.

Through real engines and real jobs, except where the property is the plugin manager's own
(nested calls on one thread).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Generator
from typing import Any

import pluggy
import pytest

from worker_core._hookcalls import ISOLATED_HOOKS, HookFailed
from worker_core._plugins import make_plugin_manager
from worker_core.plugin import Chunk, ExitResult, Job, JobSpec, JobState, Stream, hookimpl
from worker_core.testing import drain, run_job, running_engine

ECHO = JobSpec("/bin/sh", ("-c", "echo out; echo err >&2"))


class Seen:
    """A list shared by several throwaway plugins, safe across engine threads."""

    def __init__(self) -> None:
        self._items: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, who: str, what: str) -> None:
        with self._lock:
            self._items.append((who, what))

    def of(self, who: str) -> list[str]:
        with self._lock:
            return [what for w, what in self._items if w == who]

    def all(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)


class Observer:
    """Records every call of its one hook into ``seen``; raises after recording if asked."""

    def __init__(self, name: str, seen: Seen, raises: bool = False) -> None:
        self.name = name
        self._seen = seen
        self._raises = raises

    def saw(self, event: str) -> None:
        self._seen.add(self.name, event)
        if self._raises:
            raise RuntimeError(f"{self.name} broke")


class PostExitObserver(Observer):
    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        self.saw(f"{job.id} exit={result.exit_code}")


class StateObserver(Observer):
    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        self.saw(f"{job.id} {job.state.value}")


class OutputObserver(Observer):
    @hookimpl
    def on_output(self, job: Job, chunk: Chunk) -> None:
        self.saw(f"{job.id} {chunk.stream.value}@{chunk.offset}")


OBSERVERS: dict[str, type[Observer]] = {
    "post_exit": PostExitObserver,
    "on_state_change": StateObserver,
    "on_output": OutputObserver,
}


def observer(hook: str, name: str, seen: Seen, raises: bool = False) -> Observer:
    return OBSERVERS[hook](name, seen, raises)


#: The isolated hooks that observe (``admit``, the other one, is tested with the scheduler).
OBSERVER_HOOKS = sorted(OBSERVERS)


def test_the_isolated_hooks_are_the_observer_hooks_and_admit() -> None:
    assert {*OBSERVERS, "admit"} == ISOLATED_HOOKS


@pytest.mark.parametrize("hook", OBSERVER_HOOKS)
def test_each_implementation_runs_even_when_one_called_before_it_raises(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    # pluggy calls the last registered first: "breaker" runs before "survivor" every time.
    survivor = observer(hook, "survivor", seen)
    breaker = observer(hook, "breaker", seen, raises=True)
    with caplog.at_level(logging.ERROR), running_engine(survivor, breaker) as engine:
        job = run_job(engine, ECHO)
        assert drain(engine.follow(job.id)) == {Stream.STDOUT: b"out\n", Stream.STDERR: b"err\n"}
    assert seen.of("survivor") == seen.of("breaker"), "each call reached both plugins"
    assert seen.of("survivor"), f"{hook} never fired"
    order = [who for who, _ in seen.all()]
    assert order[:2] == ["breaker", "survivor"]
    failures = [
        r.getMessage() for r in caplog.records if f"plugin 'breaker': {hook}" in r.getMessage()
    ]
    assert len(failures) == len(seen.of("breaker")), (
        "every failure is logged, naming plugin and hook"
    )
    assert all("RuntimeError: breaker broke" in line for line in failures)
    assert job.exit_code == 0


class Wrapping:
    """A new-style wrapper on every observer hook, with an implementation that raises inside."""

    name = "wrapping"

    def __init__(self, seen: Seen) -> None:
        self.seen = seen
        self.yielded: list[object] = []

    def _around(self, hook: str) -> Generator[None, Any, Any]:
        self.seen.add("wrapper", f"enter {hook}")
        answers = yield  # the others' results; never raises, though one of them did
        self.yielded.append(answers)
        self.seen.add("wrapper", f"exit {hook}")
        return answers

    @hookimpl(wrapper=True)
    def post_exit(self, job: Job, result: ExitResult) -> Generator[None, Any, Any]:
        return (yield from self._around("post_exit"))

    @hookimpl(wrapper=True)
    def on_state_change(self, job: Job, previous: JobState | None) -> Generator[None, Any, Any]:
        return (yield from self._around("on_state_change"))

    @hookimpl(wrapper=True)
    def on_output(self, job: Job, chunk: Any) -> Generator[None, Any, Any]:
        return (yield from self._around("on_output"))


class OldStyleWrapping(Wrapping):
    name = "old-style"

    def _around(self, hook: str) -> Generator[None, Any, Any]:
        self.seen.add("wrapper", f"enter {hook}")
        outcome = yield  # a pluggy.Result
        self.yielded.append(outcome.get_result())
        self.seen.add("wrapper", f"exit {hook}")

    @hookimpl(hookwrapper=True)
    def post_exit(self, job: Job, result: ExitResult) -> Generator[None, Any, Any]:
        return (yield from self._around("post_exit"))

    @hookimpl(hookwrapper=True)
    def on_state_change(self, job: Job, previous: JobState | None) -> Generator[None, Any, Any]:
        return (yield from self._around("on_state_change"))

    @hookimpl(hookwrapper=True)
    def on_output(self, job: Job, chunk: Any) -> Generator[None, Any, Any]:
        return (yield from self._around("on_output"))


class Inner:
    """Records into the same list as the wrapper, and raises on every call."""

    name = "inner"

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def _note(self, hook: str) -> None:
        self.seen.add("wrapper", f"inner {hook}")
        raise RuntimeError("inner broke")

    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        self._note("post_exit")

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        self._note("on_state_change")

    @hookimpl
    def on_output(self, job: Job, chunk: Any) -> None:
        self._note("on_output")


@pytest.mark.parametrize("wrapper_class", [Wrapping, OldStyleWrapping], ids=["new", "old"])
def test_a_wrapper_on_an_observer_hook_runs_once_around_the_implementations(
    wrapper_class: type[Wrapping],
) -> None:
    seen = Seen()
    wrapper = wrapper_class(seen)
    with running_engine(Inner(seen), wrapper) as engine:
        run_job(engine, ECHO)
    events = seen.of("wrapper")
    for hook in OBSERVER_HOOKS:
        mine = [e for e in events if e.endswith(f" {hook}")]
        calls = len(mine) // 3
        assert calls >= 1, f"the wrapper never ran for {hook}: {events}"
        assert mine == [f"enter {hook}", f"inner {hook}", f"exit {hook}"] * calls
    # Every yield returned normally, with the (empty) list of results.
    assert wrapper.yielded and all(answers == [] for answers in wrapper.yielded)


class BrokenWrapper:
    """Raises before its yield on post_exit, after it on on_output."""

    name = "broken-wrapper"

    @hookimpl(wrapper=True)
    def post_exit(self, job: Job, result: ExitResult) -> Generator[None, Any, Any]:
        raise RuntimeError("wrapper broke before yield")
        yield  # pragma: no cover - a generator that fails first

    @hookimpl(wrapper=True)
    def on_output(self, job: Job, chunk: Any) -> Generator[None, Any, Any]:
        yield
        raise RuntimeError("wrapper broke after yield")


class Cleanup:
    name = "cleanup"

    def __init__(self) -> None:
        self.cleaned: list[str] = []
        self.chunks = 0

    @hookimpl
    def post_exit(self, job: Job, result: ExitResult) -> None:
        self.cleaned.append(job.id)
        result.facts["cleaned"] = True

    @hookimpl
    def on_output(self, job: Job, chunk: Any) -> None:
        self.chunks += 1


def test_a_raising_wrapper_is_logged_and_keeps_nothing_from_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cleanup = Cleanup()
    with caplog.at_level(logging.ERROR), running_engine(cleanup, BrokenWrapper()) as engine:
        job = run_job(engine, ECHO)
        assert engine.output(job.id) == b"out\n"
    assert cleanup.cleaned == [job.id], "the cleanup inside the broken wrapper ran"
    assert job.facts["cleaned"] is True
    assert cleanup.chunks >= 2
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "plugin 'broken-wrapper': post_exit raised RuntimeError: wrapper broke before yield" in m
        for m in messages
    )
    assert any(
        "plugin 'broken-wrapper': on_output raised RuntimeError: wrapper broke after yield" in m
        for m in messages
    )


def test_hookcall_monitoring_sees_the_observer_hooks_with_their_plugins() -> None:
    seen = Seen()
    calls: list[tuple[str, tuple[str, ...]]] = []
    lock = threading.Lock()

    def before(name: str, impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
        with lock:
            calls.append((name, tuple(i.plugin_name for i in impls)))

    def after(outcome: Any, name: str, impls: Any, kwargs: Any) -> None:
        pass

    plugins = [observer(hook, f"watcher-{hook}", seen) for hook in OBSERVER_HOOKS]
    with running_engine(*plugins) as engine:
        undo = engine.plugin_manager.add_hookcall_monitoring(before, after)
        try:
            run_job(engine, ECHO)
        finally:
            undo()
    for hook in OBSERVER_HOOKS:
        assert (hook, (f"watcher-{hook}",)) in calls, f"monitoring never saw {hook}"


def test_a_hook_without_implementations_is_skipped_unless_calls_are_monitored() -> None:
    # Skipped: the engine calls several per job; but monitoring sees every call, empty or not.
    calls: list[str] = []

    def before(name: str, impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
        calls.append(name)

    def after(outcome: Any, name: str, impls: Any, kwargs: Any) -> None:
        pass

    with running_engine() as engine:
        pm = engine.plugin_manager
        assert pm.idle("pre_spawn") and pm.idle("on_state_change")
        run_job(engine, ECHO)
        undo = pm.add_hookcall_monitoring(before, after)
        assert not pm.idle("pre_spawn")
        try:
            run_job(engine, ECHO)
        finally:
            undo()
            undo()  # a second undo changes nothing
        assert pm.idle("pre_spawn")
        watcher = observer("on_state_change", "watcher", Seen())
        pm.register(watcher)
        assert not pm.idle("on_state_change") and pm.idle("pre_spawn")
    for hook in ("validate_spec", "pre_spawn", "on_state_change", "post_exit"):
        assert hook in calls, f"monitoring did not see {hook}"


def test_isolated_calls_nested_on_one_thread_keep_their_own_failures() -> None:
    pm = make_plugin_manager()
    inner_failures: list[list[HookFailed]] = []

    class Outer:
        @hookimpl
        def on_state_change(self, job: Any, previous: Any) -> None:
            inner_failures.append(pm.call_isolated("on_output", job=job, chunk=None)[1])
            raise RuntimeError("outer broke")

    class Chunky:
        @hookimpl
        def on_output(self, job: Any, chunk: Any) -> None:
            raise ValueError("inner broke")

    pm.register(Outer(), "outer")
    pm.register(Chunky(), "chunky")
    outer = pm.call_isolated("on_state_change", job="j", previous=None)[1]
    assert [(f.plugin, f.hook, type(f.error)) for f in outer] == [
        ("outer", "on_state_change", RuntimeError)
    ]
    assert [[(f.plugin, f.hook) for f in inner] for inner in inner_failures] == [
        [("chunky", "on_output")]
    ]


def test_an_isolated_hook_called_straight_through_pm_hook_still_runs_every_implementation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Seen()
    pm = make_plugin_manager()
    pm.register(observer("on_output", "quiet", seen))
    pm.register(observer("on_output", "loud", seen, raises=True))
    chunk = type("C", (), {"stream": Stream.STDOUT, "offset": 0})()
    job = type("J", (), {"id": "j1"})()
    with caplog.at_level(logging.ERROR):
        pm.hook.on_output(job=job, chunk=chunk)  # nobody collects: the failure is logged
    assert [who for who, _ in seen.all()] == ["loud", "quiet"]
    assert any(
        "plugin 'loud': on_output raised RuntimeError: loud broke" in r.getMessage()
        for r in caplog.records
    )


# ------------------------------------------------------------------------------------------
# WORKER_TRACE_PLUGINS
# ------------------------------------------------------------------------------------------

TRACED_SCRIPT = """
import os
from worker_core import Config, Engine, JobSpec
from worker_core.plugin import hookimpl

# Set after worker_core is imported: the variable is read when the engine is made.
os.environ["WORKER_TRACE_PLUGINS"] = os.environ.pop("TRACE_FOR_TEST", "")

class Probe:
    name = "probe"

    @hookimpl
    def validate_spec(self, spec):
        return ["limits.memory_max"] * 40  # a long result: its repr is cut

    @hookimpl
    def pre_spawn(self, job, plan):
        plan.env["PROBED"] = "1"

    @hookimpl
    def on_output(self, job, chunk):
        pass

    @hookimpl
    def post_exit(self, job, result):
        raise RuntimeError("probe cleanup failed")

config = Config.from_mapping({"engine": {"stop_grace": 1.0, "output_linger": 0.5}})
with Engine([Probe()], config) as engine:
    job = engine.submit(JobSpec("/bin/sh", ("-c", "echo $PROBED")))
    job = engine.wait(job.id, timeout=30)
    assert job.is_finished and engine.output(job.id) == b"1\\n", job
print("done")
"""

TRACE_LINE = re.compile(
    r"^worker\.plugins\.trace: hook=(?P<hook>\w+) plugin=(?P<plugin>[\w.-]+) "
    r"kind=(?P<kind>impl|wrapper) duration=(?P<ms>\d+\.\d{3})ms (?P<outcome>result|raised)=(?P<repr>.*)$"
)


def run_traced(trace: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRACE_FOR_TEST": trace}
    env.pop("WORKER_TRACE_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRACED_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "done\n", result.stderr
    return result


def test_worker_trace_plugins_logs_every_hook_call_with_plugin_duration_and_result() -> None:
    stderr = run_traced("1").stderr.splitlines()
    traced = [m.groupdict() for line in stderr if (m := TRACE_LINE.match(line))]
    calls = {(t["hook"], t["plugin"]) for t in traced}
    for expected in [
        ("configure", "memory"),
        ("job_store", "memory"),
        ("output_store", "memory"),
        ("validate_spec", "probe"),
        ("pre_spawn", "probe"),
        ("on_output", "probe"),
        ("post_exit", "probe"),
    ]:
        assert expected in calls, f"no trace line for {expected}: {stderr}"
    by_hook = {t["hook"]: t for t in traced if t["plugin"] == "probe"}
    assert by_hook["pre_spawn"]["outcome"] == "result" and by_hook["pre_spawn"]["repr"] == "None"
    assert by_hook["post_exit"]["outcome"] == "raised"
    assert by_hook["post_exit"]["repr"] == "RuntimeError('probe cleanup failed')"
    long = by_hook["validate_spec"]["repr"]
    assert long.startswith("['limits.memory_max', ") and long.endswith("...") and len(long) == 200
    assert all(float(t["ms"]) >= 0 for t in traced)
    # One line per implementation call, not two (no handler doubles them).
    assert sum(1 for t in traced if t["hook"] == "pre_spawn") == 1
    # The isolated failure is also reported by the engine, naming the plugin.
    assert any(
        "plugin 'probe': post_exit raised RuntimeError: probe cleanup failed" in line
        for line in stderr
    )


def test_without_the_variable_nothing_is_traced() -> None:
    result = run_traced("")
    assert "worker.plugins.trace" not in result.stderr
