"""Pause, resume and live usage on the v2 backend, against a cgroup2-shaped directory tree.

This hybrid host's cgroup2 hierarchy has no controllers (see ``test_cgroups_v2.py``), so the
kernel's part is played by the test: it flips ``frozen`` in ``cgroup.events`` when the
backend writes ``cgroup.freeze``, and fills ``cpu.stat`` and ``memory.current``. Real freezing
is tested on v1 in ``test_cgroups_pause.py``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import Held, make_v2_tree
from helpers import wait_until

from worker_core._model import ExitResult, Job
from worker_core.plugin import Config, JobSpec, SpawnPlan
from worker_plugins.cgroups.fs import CgroupError
from worker_plugins.cgroups.plugin import CgroupsPlugin
from worker_plugins.cgroups.v2 import V2Backend

PARENT = "worker"
JOB = Job(id="j1", owner=None, spec=JobSpec(command="/bin/true"))


def read(path: Path) -> str:
    return path.read_text()


def job_dir(root: Path) -> Path:
    return root / PARENT / JOB.id


class FakeFreezer:
    """The kernel's side of ``cgroup.freeze``: once the backend writes ``value``, say so in
    ``cgroup.events`` (after the backend has had time to look, so a wait is really needed)."""

    def __init__(self, job: Path, value: str) -> None:
        self.answered = threading.Event()
        self._stop = threading.Event()

        def kernel() -> None:
            while not self._stop.wait(0.01):
                if (job / "cgroup.freeze").exists() and read(job / "cgroup.freeze") == value:
                    self._stop.wait(0.1)
                    # Set before the write: the backend cannot see the file change first.
                    self.answered.set()
                    (job / "cgroup.events").write_text(f"populated 1\nfrozen {value}\n")
                    return

        self._thread = threading.Thread(target=kernel, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_v2_tree(tmp_path / "cgroup", PARENT)


def created(root: Path, freeze_timeout: float = 10.0) -> V2Backend:
    backend = V2Backend(root, PARENT, default_pids_max=4096, freeze_timeout=freeze_timeout)
    backend.create(JOB.id, JOB.spec.limits)
    return backend


@pytest.fixture
def plugin(tree: Path) -> Iterator[CgroupsPlugin]:
    """The plugin configured on ``tree``, holding ``JOB`` (its ``pre_spawn`` has run)."""
    plugin = CgroupsPlugin()
    config = Config.from_mapping({"plugins": {"cgroups": {"root": str(tree), "parent": PARENT}}})
    plugin.configure(engine=object(), config=config)
    assert plugin.backend.version == "v2"
    plugin.backend.remove_timeout = 0.1  # rmdir never succeeds on a plain directory tree
    plugin.backend.freeze_timeout = 10.0
    plugin.pre_spawn(
        job=JOB, plan=SpawnPlan(executable="/bin/true", argv=["true"], env={}, cwd="/")
    )
    yield plugin
    plugin.shutdown(engine=object())  # releases the parent lock


# ------------------------------------------------------------------ the backend


def test_freeze_writes_1_and_waits_until_cgroup_events_says_frozen(tree: Path) -> None:
    backend = created(tree)
    (job_dir(tree) / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    kernel = FakeFreezer(job_dir(tree), "1")
    try:
        assert backend.freeze(JOB.id, True) is True
        assert kernel.answered.is_set(), "returned before the kernel reported the freeze"
        assert read(job_dir(tree) / "cgroup.freeze") == "1"
    finally:
        kernel.close()


def test_thaw_writes_0_and_waits_until_cgroup_events_says_thawed(tree: Path) -> None:
    backend = created(tree)
    (job_dir(tree) / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    kernel = FakeFreezer(job_dir(tree), "0")
    try:
        assert backend.freeze(JOB.id, False) is True
        assert kernel.answered.is_set(), "returned before the kernel reported the thaw"
        assert read(job_dir(tree) / "cgroup.freeze") == "0"
    finally:
        kernel.close()


def test_a_freeze_that_never_completes_is_undone_and_reported(tree: Path) -> None:
    backend = created(tree, freeze_timeout=0.2)
    # The fake kernel never freezes the job (a task stuck in uninterruptible sleep).
    (job_dir(tree) / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    with pytest.raises(CgroupError, match=rf"job {JOB.id}: not frozen after 0.2 s.*thawed"):
        backend.freeze(JOB.id, True)
    assert read(job_dir(tree) / "cgroup.freeze") == "0"  # left running, not half frozen


def test_without_cgroup_events_there_is_nothing_to_wait_for(tree: Path) -> None:
    backend = created(tree)  # a 10 s timeout: waiting at all would end in an error
    assert not (job_dir(tree) / "cgroup.events").exists()
    assert backend.freeze(JOB.id, True) is True
    assert read(job_dir(tree) / "cgroup.freeze") == "1"


def test_a_kernel_without_cgroup_freeze_cannot_pause(tmp_path: Path) -> None:
    root = make_v2_tree(tmp_path / "cg", PARENT, omit=["cgroup.freeze"])  # before 5.2
    backend = created(root)
    assert backend.freeze(JOB.id, True) is False
    assert not (job_dir(root) / "cgroup.freeze").exists()


def test_usage_reads_cpu_stat_and_memory_current(tree: Path) -> None:
    backend = created(tree)
    (job_dir(tree) / "cpu.stat").write_text(
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
    )
    (job_dir(tree) / "memory.current").write_text("12582912\n")
    assert backend.usage(JOB.id).as_dict() == {"cpu_seconds": 2.5, "memory_current": 12582912}


# ------------------------------------------------------------------ the plugin


def test_plugin_pauses_and_resumes_a_job_it_holds(plugin: CgroupsPlugin, tree: Path) -> None:
    assert plugin.freeze_job(job=JOB, frozen=True) is True
    assert read(job_dir(tree) / "cgroup.freeze") == "1"
    assert plugin.freeze_job(job=JOB, frozen=False) is True
    assert read(job_dir(tree) / "cgroup.freeze") == "0"


def test_plugin_does_not_answer_for_a_job_it_does_not_hold(plugin: CgroupsPlugin) -> None:
    stranger = Job(id="stranger", owner=None, spec=JobSpec(command="/bin/true"))
    assert plugin.freeze_job(job=stranger, frozen=True) is None
    assert plugin.job_usage(job=stranger) is None


def test_plugin_leaves_pausing_to_the_engine_without_cgroup_freeze(tmp_path: Path) -> None:
    root = make_v2_tree(tmp_path / "cg", PARENT, omit=["cgroup.freeze"])
    plugin = CgroupsPlugin()
    config = Config.from_mapping({"plugins": {"cgroups": {"root": str(root), "parent": PARENT}}})
    plugin.configure(engine=object(), config=config)
    plugin.backend.remove_timeout = 0.1
    try:
        plugin.pre_spawn(
            job=JOB, plan=SpawnPlan(executable="/bin/true", argv=["true"], env={}, cwd="/")
        )
        assert plugin.freeze_job(job=JOB, frozen=True) is None  # the engine sends SIGSTOP
    finally:
        plugin.shutdown(engine=object())


def test_plugin_job_usage(plugin: CgroupsPlugin, tree: Path) -> None:
    assert plugin.job_usage(job=JOB) is None  # nothing to read yet: no answer
    (job_dir(tree) / "cpu.stat").write_text("usage_usec 750000\n")
    assert plugin.job_usage(job=JOB) == {"cpu_seconds": 0.75}
    (job_dir(tree) / "memory.current").write_text("4096\n")
    assert plugin.job_usage(job=JOB) == {"cpu_seconds": 0.75, "memory_current": 4096}


@pytest.fixture
def held_in_job(plugin: CgroupsPlugin, tree: Path) -> Iterator[Held]:
    """A sleeping process, listed in the job's ``cgroup.procs`` by the fake kernel."""
    held = Held("import time; time.sleep(60)")
    try:
        (job_dir(tree) / "cgroup.procs").write_text(f"{held.pid}\n")
        yield held
    finally:
        held.close()


def test_a_signal_leaves_a_paused_job_frozen(
    plugin: CgroupsPlugin, tree: Path, held_in_job: Held
) -> None:
    # Without cgroup.kill every signal goes through freeze, signal, thaw; a paused job
    # must not be thawed by it.
    plugin.backend._has_kill = False  # as on a kernel before 5.14
    assert plugin.freeze_job(job=JOB, frozen=True) is True
    assert plugin.signal_job(job=JOB, signum=signal.SIGTERM) is True
    assert read(job_dir(tree) / "cgroup.freeze") == "1"
    # The fake kernel does not really freeze, so the signal is acted on at once here.
    assert held_in_job.proc.wait(timeout=5) == -signal.SIGTERM


def test_sigkill_thaws_a_paused_job_without_cgroup_kill(
    plugin: CgroupsPlugin, tree: Path, held_in_job: Held
) -> None:
    plugin.backend._has_kill = False
    assert plugin.freeze_job(job=JOB, frozen=True) is True
    assert plugin.signal_job(job=JOB, signum=signal.SIGKILL) is True
    assert read(job_dir(tree) / "cgroup.freeze") == "0"
    assert not (job_dir(tree) / "cgroup.kill").exists()
    assert held_in_job.proc.wait(timeout=5) == -signal.SIGKILL


def test_sigkill_to_a_paused_job_uses_cgroup_kill_and_thaws(
    plugin: CgroupsPlugin, tree: Path, held_in_job: Held
) -> None:
    assert plugin.freeze_job(job=JOB, frozen=True) is True
    assert plugin.signal_job(job=JOB, signum=signal.SIGKILL) is True
    assert read(job_dir(tree) / "cgroup.kill") == "1"  # the kernel does the killing
    assert read(job_dir(tree) / "cgroup.freeze") == "0"


def test_post_exit_thaws_a_job_that_ended_paused(plugin: CgroupsPlugin, tree: Path) -> None:
    assert plugin.freeze_job(job=JOB, frozen=True) is True
    plugin.post_exit(job=JOB, result=ExitResult(exit_code=None, signal=9))
    assert read(job_dir(tree) / "cgroup.freeze") == "0"


def test_the_kernel_player_really_waits(tree: Path) -> None:
    # Guard for FakeFreezer: it answers only to the value it was told, and only once.
    job = tree / PARENT / "x"
    job.mkdir()
    kernel = FakeFreezer(job, "1")
    try:
        (job / "cgroup.freeze").write_text("0")
        assert not wait_until(kernel.answered.is_set, 0.3)
        (job / "cgroup.freeze").write_text("1")
        assert wait_until(kernel.answered.is_set, 5)
        assert wait_until(lambda: "frozen 1" in read(job / "cgroup.events"), 5)
    finally:
        kernel.close()
