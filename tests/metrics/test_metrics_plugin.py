"""The ``metrics`` plugin through a real engine: real jobs, a real HTTP scrape of ``/metrics``
parsed with prometheus_client's own parser, a real port taken by another listener."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import descendants
from metrics_helpers import (
    WAIT,
    free_port,
    jobs_by_state,
    refuses_connections,
    scrape,
    scrape_until,
    value,
)

from worker_core.plugin import (
    Config,
    ConfigError,
    EndReason,
    Engine,
    JobSpec,
    JobState,
    PluginError,
)
from worker_core.testing import run_job, running_engine
from worker_plugins.metrics import record_rpc


def metrics_config(listen: str = "127.0.0.1:0", **engine: Any) -> dict[str, Any]:
    return {"engine": engine, "plugins": {"metrics": {"listen": listen}}}


@contextlib.contextmanager
def metrics_engine(
    *plugins: str, listen: str = "127.0.0.1:0", **engine: Any
) -> Iterator[tuple[Engine, str]]:
    """A started engine with ``metrics`` (on a free loopback port unless told) and the
    address it serves."""
    with running_engine("metrics", *plugins, config=metrics_config(listen, **engine)) as eng:
        address = eng.plugin_manager.get_plugin("metrics").address
        assert address is not None
        yield eng, address


# -------------------------------------------------------------------------------------------


def test_counts_match_the_jobs_run(tmp_path: Path) -> None:
    # Exec of a file that is no program: the kernel refuses it, the job fails to start.
    not_a_program = tmp_path / "garbage"
    not_a_program.write_bytes(b"\x00\x01\x02 not an executable format\n")
    not_a_program.chmod(0o755)
    with metrics_engine() as (engine, address):
        before = scrape(address)
        assert value(before, "worker_jobs_submitted_total") == 0
        assert all(count == 0 for count in jobs_by_state(before).values())

        ok = run_job(engine, JobSpec("true"))
        failed = run_job(engine, JobSpec("sh", ("-c", "exit 3")))
        unstarted = run_job(engine, JobSpec(str(not_a_program)))
        sleeper = engine.submit(JobSpec("sleep", ("60",)))
        assert (ok.exit_code, failed.exit_code) == (0, 3)
        assert unstarted.end_reason is EndReason.FAILED_TO_START

        running = scrape_until(address, lambda s: jobs_by_state(s)["running"] == 1)
        assert jobs_by_state(running) == {
            "queued": 0,
            "held": 0,
            "pending": 0,
            "running": 1,
            "paused": 0,
            "stopping": 0,
        }
        stopped = engine.stop(sleeper.id, grace=5, timeout=WAIT)
        assert stopped.end_reason is EndReason.STOPPED

        after = scrape_until(
            address, lambda s: value(s, "worker_jobs_ended_total", reason="stopped") == 1
        )
    assert value(after, "worker_jobs_submitted_total") == 4
    ended = {
        reason.value: value(after, "worker_jobs_ended_total", reason=reason.value)
        for reason in EndReason
    }
    assert ended == {
        **{reason.value: 0.0 for reason in EndReason},
        "exited": 2.0,
        "failed_to_start": 1.0,
        "stopped": 1.0,
    }
    assert all(count == 0 for count in jobs_by_state(after).values())
    # Three jobs got a process; the one whose exec failed never became RUNNING.
    assert value(after, "worker_spawn_duration_seconds_count") == 3
    assert value(after, "worker_spawn_duration_seconds_sum") > 0
    assert value(after, "worker_spawn_duration_seconds_bucket", le="+Inf") == 3


def test_queue_depth_counts_queued_jobs_and_not_held_ones() -> None:
    with metrics_engine(max_running=1) as (engine, address):
        blocker = engine.submit(JobSpec("sleep", ("60",)))
        queued = [engine.submit(JobSpec("true")) for _ in range(2)]
        held = engine.submit(JobSpec("true", hold=True))
        assert [job.state for job in queued] == [JobState.QUEUED, JobState.QUEUED]
        assert held.state is JobState.HELD

        waiting = scrape(address)
        assert value(waiting, "worker_queue_depth") == 2
        states = jobs_by_state(waiting)
        assert (states["running"], states["queued"], states["held"]) == (1, 2, 1)

        engine.stop(blocker.id, grace=5, timeout=WAIT)
        for job in queued:
            assert engine.wait(job.id, timeout=WAIT).state is JobState.ENDED
        drained = scrape_until(address, lambda s: jobs_by_state(s)["queued"] == 0)
    assert value(drained, "worker_queue_depth") == 0
    states = jobs_by_state(drained)
    assert (states["running"], states["queued"], states["held"]) == (0, 0, 1)
    # The queued ones were measured from leaving the queue: each has one spawn sample.
    assert value(drained, "worker_spawn_duration_seconds_count") == 3


def test_output_bytes_by_stream() -> None:
    script = "head -c 100000 /dev/zero; head -c 123 /dev/zero >&2; printf abc"
    with metrics_engine() as (engine, address):
        job = run_job(engine, JobSpec("sh", ("-c", script)))
        assert job.exit_code == 0
        # on_output sees every chunk before the job can end.
        samples = scrape(address)
    assert value(samples, "worker_output_bytes_total", stream="stdout") == 100003
    assert value(samples, "worker_output_bytes_total", stream="stderr") == 123


def test_rpc_latency_is_recorded_by_method_and_code() -> None:
    with metrics_engine() as (_, address):
        record_rpc("Submit", "OK", 0.004)
        record_rpc("Submit", "OK", 0.2)
        record_rpc("Get", "NOT_FOUND", 0.001)
        samples = scrape(address)
    assert value(samples, "worker_rpc_duration_seconds_count", method="Submit", code="OK") == 2
    assert value(samples, "worker_rpc_duration_seconds_sum", method="Submit", code="OK") == (
        pytest.approx(0.204)
    )
    assert (
        value(samples, "worker_rpc_duration_seconds_bucket", method="Submit", code="OK", le="0.005")
        == 1
    )
    assert value(samples, "worker_rpc_duration_seconds_count", method="Get", code="NOT_FOUND") == 1
    # With no engine running it goes nowhere, and never fails the call it measures.
    record_rpc("Submit", "OK", 0.001)


def test_each_engine_has_its_own_series() -> None:
    with metrics_engine() as (busy, busy_address), metrics_engine() as (_, idle_address):
        run_job(busy, JobSpec("true"))
        busy_samples = scrape_until(
            busy_address, lambda s: value(s, "worker_jobs_ended_total", reason="exited") == 1
        )
        idle_samples = scrape(idle_address)
    assert value(busy_samples, "worker_jobs_submitted_total") == 1
    assert value(idle_samples, "worker_jobs_submitted_total") == 0


def test_jobs_an_earlier_run_left_waiting_are_counted(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with running_engine("sqlite", "no:memory", state_dir=state_dir) as first:
        first.submit(JobSpec("true", hold=True))
        first.submit(JobSpec("true", hold=True))
    with metrics_engine("sqlite", "no:memory", state_dir=state_dir) as (_, address):
        samples = scrape(address)
    assert jobs_by_state(samples)["held"] == 2
    # Taken back, not submitted again.
    assert value(samples, "worker_jobs_submitted_total") == 0


# -- bad input ----------------------------------------------------------------------------


def _worker_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("worker")}


def test_an_address_in_use_is_one_line_and_nothing_is_left(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    children = descendants(os.getpid())
    threads = _worker_threads()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(PluginError) as refused,
            running_engine(
                "metrics", config=metrics_config(f"127.0.0.1:{port}"), state_dir=state_dir
            ),
        ):
            pytest.fail("the engine started on a port in use")
        assert str(refused.value) == (
            f"metrics: cannot listen on 127.0.0.1:{port}: address already in use"
        )
        # The other listener still has its port.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    # No launcher, no engine thread, no lock on the state directory left behind.
    assert descendants(os.getpid()) <= children
    assert _worker_threads() <= threads
    with running_engine(state_dir=state_dir) as engine:
        assert run_job(engine, JobSpec("true")).exit_code == 0


def test_shutdown_frees_the_port_for_another_engine() -> None:
    with metrics_engine() as (_, address):
        port = int(address.rpartition(":")[2])
        scrape(address)
    assert refuses_connections(port)
    with metrics_engine(listen=f"127.0.0.1:{port}") as (_, again):
        assert again == f"127.0.0.1:{port}"
        assert value(scrape(again), "worker_jobs_submitted_total") == 0


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("9464", "listen must be HOST:PORT (e.g. 127.0.0.1:9464), got '9464'"),
        ("127.0.0.1:http", "listen must be HOST:PORT"),
        ("127.0.0.1:70000", "listen must be HOST:PORT"),
    ],
)
def test_a_malformed_address_names_the_key(listen: str, problem: str) -> None:
    with (
        pytest.raises(ConfigError) as refused,
        running_engine("metrics", config=metrics_config(listen)),
    ):
        pytest.fail("the engine started")
    assert problem in str(refused.value)
    assert "plugins.metrics" in str(refused.value)


def test_an_address_not_on_this_host_says_so() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host; nothing is sent to it.
    with (
        pytest.raises(PluginError) as refused,
        running_engine("metrics", config=metrics_config(f"192.0.2.1:{free_port()}")),
    ):
        pytest.fail("the engine started")
    assert "not an address of this host" in str(refused.value)


def test_without_prometheus_client_the_error_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The package is installed here; a None entry makes its import fail as if it were not.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(PluginError, match="'prometheus_client' package is not installed"):
        Engine(["metrics"], Config.from_mapping(metrics_config()))
