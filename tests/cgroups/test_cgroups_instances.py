"""Several engines per host: each owns its own cgroup subtree, and only ever cleans its own.

An engine with a state directory is ``worker/state-<hash>`` (the same on every run, so it
finds its own crash leftovers), one without is ``worker/run-<pid>-<random>`` (new on every
run, so it never takes a dead engine's leftovers for its own); ``instance`` or ``parent``
name one. These engines run under the host's real ``worker/`` directory, next to whatever
else runs there; every test checks that the subtrees it made are gone.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import (
    DAEMONIZE,
    Held,
    cgroup_dirs_named,
    force_remove_parent,
    require_root,
    v1_mounts,
)
from grpc_harness import WORKER
from helpers import alive, wait_until

from worker_core import Config, ConfigError, JobSpec
from worker_core._engine import Engine
from worker_plugins.cgroups.config import BASE, state_instance
from worker_plugins.cgroups.plugin import CgroupsPlugin

#: A job that prints where it is in the pids hierarchy.
WHERE = JobSpec("sh", args=["-c", "grep -E '^[0-9]+:pids:' /proc/self/cgroup | cut -d: -f3"])


def plugin_of(engine: Engine) -> CgroupsPlugin:
    plugin = engine.plugin_manager.get_plugin("cgroups")
    assert isinstance(plugin, CgroupsPlugin)
    return plugin


class Subtrees:
    """Engines under ``worker/`` made by a test; afterwards, their subtrees must be gone."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.made_by_test: list[str] = []
        self.engines: list[Engine] = []

    def engine(self, state_dir: Path | None = None, **cgroups: object) -> Engine:
        settings: dict[str, object] = {"plugins": {"cgroups": cgroups}}
        if state_dir is not None:
            settings["engine"] = {"state_dir": str(state_dir)}
        engine = Engine(["cgroups"], Config.from_mapping(settings))
        self.engines.append(engine)
        self.names.append(plugin_of(engine).parent)
        return engine.start()

    def track(self, parent: str, *, must_go: bool = True) -> None:
        """Also check ``parent`` is gone at the end (``must_go``), or only remove it."""
        (self.names if must_go else self.made_by_test).append(parent)


@pytest.fixture
def subtrees() -> Iterator[Subtrees]:
    require_root()
    made = Subtrees()
    try:
        yield made
    finally:
        for engine in made.engines:
            engine.close(grace=0)
        left = {name: cgroup_dirs_named(name) for name in made.names}
        for name in made.names + made.made_by_test:
            force_remove_parent(name)
        assert not any(left.values()), f"subtrees left behind: {left}"


def where(engine: Engine) -> str:
    job = engine.submit(WHERE)
    ended = engine.wait(job.id, timeout=20)
    assert ended.exit_code == 0, ended.message
    return engine.output(job.id).decode().strip()


def test_two_engines_in_one_process_each_run_jobs_in_their_own_subtree(subtrees: Subtrees) -> None:
    first, second = subtrees.engine(), subtrees.engine()
    a, b = plugin_of(first).parent, plugin_of(second).parent
    assert a != b
    assert re.fullmatch(rf"{BASE}/run-{os.getpid()}-[0-9a-f]{{6}}", a)
    running = first.submit(JobSpec("sleep", args=["60"]))
    assert where(second).startswith(f"/{b}/")
    assert first.get(running.id).state.value == "running"
    assert where(first).startswith(f"/{a}/")
    first.stop(running.id, grace=0)


def test_worker_run_with_cgroups_works_while_a_server_like_engine_runs(
    subtrees: Subtrees, tmp_path: Path
) -> None:
    server = subtrees.engine(state_dir=tmp_path / "state")
    assert plugin_of(server).parent == f"{BASE}/{state_instance(tmp_path / 'state')}"
    running = server.submit(JobSpec("sleep", args=["60"]))
    result = subprocess.run(
        [
            *WORKER,
            "run",
            "--plugins",
            "cgroups",
            "--pids",
            "16",
            "--",
            *WHERE.command.split(),
            *WHERE.args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    its = result.stdout.strip()
    assert re.fullmatch(rf"/{BASE}/run-\d+-[0-9a-f]{{6}}/[0-9a-f]{{32}}", its), its
    subtrees.track(its.rsplit("/", 1)[0].lstrip("/"))  # gone when it exited
    assert server.get(running.id).state.value == "running", "worker run touched the server's job"
    server.stop(running.id, grace=0)


def test_two_engines_on_one_subtree_are_refused_with_one_line(
    subtrees: Subtrees, tmp_path: Path
) -> None:
    name = f"worker-test-{os.urandom(4).hex()}"
    subtrees.engine(instance=name)
    with pytest.raises(ConfigError) as info:
        Engine(["cgroups"], Config.from_mapping({"plugins": {"cgroups": {"instance": name}}}))
    assert str(info.value) == (
        f"plugins.cgroups: another worker engine on this host uses the cgroup parent "
        f"'{BASE}/{name}'; give each engine its own (plugins.cgroups.instance or parent)"
    )
    state = tmp_path / "state"
    subtrees.engine(state_dir=state)
    with pytest.raises(ConfigError) as info:
        Engine(["cgroups"], Config.from_mapping({"engine": {"state_dir": str(state)}}))
    message = str(info.value)
    assert "\n" not in message
    assert f"derived from the state directory {state}" in message


def _crash_leftover(parent: str, job_id: str) -> tuple[Held, int]:
    """What a crash leaves: a job cgroup under ``parent``, a daemonized process inside."""
    mounts = v1_mounts()
    procs = []
    for mount in dict.fromkeys(mounts.values()):
        path = mount / parent / job_id
        path.mkdir(parents=True)
        procs.append(str(path / "cgroup.procs"))
    held = Held(DAEMONIZE + "\nimport time; time.sleep(120)").join(procs).release()
    return held, int(held.readline())


def test_crash_leftovers_are_cleaned_by_their_owner_only(
    subtrees: Subtrees, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    owner = f"{BASE}/{state_instance(state)}"
    subtrees.track(owner)
    leftover = "ab" * 16
    held, daemon = _crash_leftover(owner, leftover)
    try:
        # Engines that are not its owner start, run jobs and stop: the leftover stays.
        with caplog.at_level(logging.WARNING, logger="worker.cgroups"):
            other = subtrees.engine()
            elsewhere = subtrees.engine(state_dir=tmp_path / "other-state")
            assert where(other) and where(elsewhere)
            other.close()
            elsewhere.close()
        assert alive(daemon) and held.proc.poll() is None
        assert all((d / leftover).is_dir() for d in cgroup_dirs_named(owner))
        assert not [r for r in caplog.records if leftover in r.getMessage()]
        # Its owner (the same state directory) finds it at start and cleans it.
        with caplog.at_level(logging.WARNING, logger="worker.cgroups"):
            engine = subtrees.engine(state_dir=state)
        assert held.proc.wait(timeout=10) != 0
        assert wait_until(lambda: not alive(daemon), 10)
        assert not any((d / leftover).exists() for d in cgroup_dirs_named(owner))
        assert any(
            leftover in r.getMessage() and "2 processes killed" in r.getMessage()
            for r in caplog.records
        )
        assert where(engine).startswith(f"/{owner}/")
    finally:
        held.close()
        if alive(daemon):
            os.kill(daemon, 9)


def test_an_engine_inside_another_ones_parent_is_left_alone(subtrees: Subtrees) -> None:
    outer = f"worker-test-{os.urandom(4).hex()}"
    inner = subtrees.engine(parent=f"{outer}/inner")
    job = inner.submit(JobSpec("sleep", args=["60"]))
    outer_engine = subtrees.engine(parent=outer)  # its start-up clean-up sees "inner"
    assert inner.get(job.id).state.value == "running", "the outer engine killed the inner's job"
    inner.stop(job.id, grace=0)
    subtrees.track(outer)
    # The outer engine stops first: while it runs, its parent holds its ready cgroups, so
    # the inner engine could not remove the directory it made for both.
    outer_engine.close()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait(timeout=10)
    return process.pid


def test_empty_subtrees_of_engines_not_running_are_removed_but_nothing_is_killed(
    subtrees: Subtrees, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = list(dict.fromkeys(v1_mounts().values()))
    empty_run = f"{BASE}/run-{_dead_pid()}-0000aa"
    empty_state = f"{BASE}/{state_instance(tmp_path / 'gone')}"
    busy = f"{BASE}/run-{_dead_pid()}-0000bb"
    for name in (empty_run, empty_state):
        subtrees.track(name)
        for mount in mounts:
            (mount / name / ("cd" * 16)).mkdir(parents=True)
    subtrees.track(busy, must_go=False)  # not the engine's to remove: the test does
    held, daemon = _crash_leftover(busy, "ef" * 16)
    live = subtrees.engine(instance=f"worker-test-{os.urandom(4).hex()}")
    running = live.submit(JobSpec("sleep", args=["60"]))
    try:
        with caplog.at_level(logging.INFO, logger="worker.cgroups"):
            engine = subtrees.engine()
        assert not cgroup_dirs_named(empty_run), "the empty subtree of a dead run stayed"
        assert not cgroup_dirs_named(empty_state), "the empty subtree of a stopped server stayed"
        assert alive(daemon) and held.proc.poll() is None, "a dead run's process was killed"
        assert cgroup_dirs_named(busy)
        assert live.get(running.id).state.value == "running", "a live engine's job was touched"
        messages = [r.getMessage() for r in caplog.records]
        assert any(busy in m and "not ours to kill" in m for m in messages), messages
        assert where(engine)
    finally:
        live.stop(running.id, grace=0)
        held.close()
        if alive(daemon):
            os.kill(daemon, 9)


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"instance": "a", "parent": "b"}, "set instance .* or parent .*, not both"),
        ({"instance": "a/b"}, "instance must be one name"),
        ({"instance": ".."}, "instance must be one name"),
        ({"parent": f"{BASE}/x/y"}, f"inside the engine subtree {BASE}/x"),
    ],
)
def test_bad_subtree_settings_are_refused(section: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Engine(["cgroups"], Config.from_mapping({"plugins": {"cgroups": section}}))


def test_the_state_instance_is_stable_and_distinct(tmp_path: Path) -> None:
    a = state_instance(tmp_path / "a")
    assert a == state_instance(tmp_path / "x" / ".." / "a")
    assert a != state_instance(tmp_path / "b")
    assert re.fullmatch(r"state-[0-9a-f]{12}", a)
    assert sys.platform == "linux"
