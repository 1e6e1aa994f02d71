"""An ended job's cgroup is removed after its end is reported, off the job's path.

``post_exit`` reads the facts, then hands the cgroup to the plugin's housekeeping thread,
which kills what is left and removes it, trying again while the kernel says busy. Where a
test needs removal held back or "busy" to show the order of things, it wraps the backend's
one-attempt removal (:class:`cgroup_views.RemovalGate`); the removal it finally lets through
is the real one, on real cgroups.
"""

from __future__ import annotations

import logging
import sys
import threading

import pytest
from cgroup_helpers import DAEMONIZE
from cgroup_views import HOUSEKEEPER, config, gated_removal, plugin_of, v1_backend
from helpers import alive, wait_until

from worker_core import EndReason, JobSpec, JobState
from worker_core._engine import Engine
from worker_plugins.cgroups.housekeeper import Housekeeper

TRUE = JobSpec("/bin/true")


def test_the_end_is_reported_before_the_cgroup_is_removed(engine: Engine) -> None:
    backend = plugin_of(engine).backend
    with gated_removal(backend, closed=True) as gate:
        done = engine.wait(engine.submit(TRUE).id, timeout=15)
        # Ended and reported while its removal cannot happen yet: nothing waited for it.
        assert done.state is JobState.ENDED
        assert done.end_reason is EndReason.EXITED, done.message
        assert backend.exists(done.id)
        assert wait_until(lambda: gate.attempts.get(done.id, 0) >= 2, 10), "never retried"
        assert done.id in plugin_of(engine).pending_removals()
        gate.open.set()
        assert wait_until(lambda: not backend.exists(done.id), 10)
    assert gate.threads == {HOUSEKEEPER}
    assert plugin_of(engine).pending_removals() == []


def test_a_busy_cgroup_is_tried_again_in_the_background(engine: Engine) -> None:
    backend = plugin_of(engine).backend
    with gated_removal(backend, busy_first=3) as gate:
        done = engine.wait(engine.submit(TRUE).id, timeout=15)
        assert done.end_reason is EndReason.EXITED, done.message
        assert wait_until(lambda: not backend.exists(done.id), 10)
    assert gate.attempts[done.id] == 4  # three "busy", then the real removal


def test_a_daemon_left_by_an_ended_job_is_killed_and_its_cgroup_removed(engine: Engine) -> None:
    done = engine.wait(
        engine.submit(JobSpec(sys.executable, args=["-c", DAEMONIZE])).id, timeout=15
    )
    assert done.end_reason is EndReason.EXITED, done.message
    grandchild = int(engine.output(done.id).split()[0])
    assert wait_until(lambda: not alive(grandchild), 10), "the daemon outlived its job"
    assert wait_until(lambda: not plugin_of(engine).backend.exists(done.id), 10)


def test_a_removal_given_up_in_the_background_is_done_at_shutdown(
    parent: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Engine(plugins=["cgroups"], config=config(parent)) as engine:
        backend = v1_backend(engine)
        backend.remove_timeout = 0.3  # how long the housekeeping thread keeps trying
        with (
            caplog.at_level(logging.WARNING, logger="worker.cgroups"),
            gated_removal(backend, closed=True) as gate,
        ):
            done = engine.wait(engine.submit(TRUE).id, timeout=15)
            assert wait_until(
                lambda: any("still busy" in r.getMessage() for r in caplog.records), 10
            ), "the housekeeping thread never gave up"
            assert backend.exists(done.id)
            assert plugin_of(engine).pending_removals() == []
            # The gate stays closed for the housekeeping thread; shutdown removes it itself,
            # for real.
            engine.close()
        assert gate.attempts[done.id] >= 2
        assert "MainThread" in gate.threads
    assert not backend.exists(done.id)
    # The parent fixture checks that nothing at all is left under the parent.


def test_shutdown_with_removals_queued_leaves_nothing(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent, pool_size=2)) as engine:
        backend = v1_backend(engine)
        with gated_removal(backend, closed=True) as gate:
            ids = [engine.submit(TRUE).id for _ in range(6)]
            for job_id in ids:
                assert engine.wait(job_id, timeout=15).end_reason is EndReason.EXITED
            # Every removal is queued or waiting for a retry, none done: the kernel "is busy".
            assert wait_until(lambda: set(ids) <= set(plugin_of(engine).pending_removals()))
            assert all(backend.exists(job_id) for job_id in ids)
            gate.open.set()  # and no longer: shutdown drains the queue from here
            engine.close()
        assert not any(backend.exists(job_id) for job_id in ids)
        assert all(gate.attempts[job_id] >= 1 for job_id in ids)
    # The parent fixture checks the parent itself is gone, pool entries included.


def test_many_jobs_ending_together_each_lose_their_cgroup(parent: str) -> None:
    with Engine(plugins=["cgroups"], config=config(parent)) as engine:
        backend = v1_backend(engine)
        ids: list[str] = []
        lock = threading.Lock()

        def submit() -> None:
            for _ in range(5):
                job = engine.submit(TRUE)
                with lock:
                    ids.append(job.id)

        threads = [threading.Thread(target=submit) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(ids) == 20
        for job_id in ids:
            assert engine.wait(job_id, timeout=30).end_reason is EndReason.EXITED
        assert wait_until(lambda: backend.leftovers() == [], 15), backend.leftovers()


def test_the_housekeeping_thread_ends_when_idle_and_comes_back_for_work() -> None:
    removed: list[str] = []

    def remove_once(job_id: str) -> bool:
        removed.append(job_id)
        return True

    keeper = Housekeeper(remove_once, lambda: None, lambda: 1.0, idle_exit=0.05)
    assert keeper.remove("a")
    first = keeper._thread
    assert first is not None and first.name == HOUSEKEEPER
    assert wait_until(lambda: removed == ["a"])
    assert wait_until(lambda: not first.is_alive(), 5), "it never ended"
    assert keeper.remove("b")  # a new thread for new work
    assert wait_until(lambda: removed == ["a", "b"])
    second = keeper._thread
    keeper.close(1.0)
    assert second is None or not second.is_alive()
    assert not keeper.remove("c")  # closed: the caller removes it itself
    assert removed == ["a", "b"]
