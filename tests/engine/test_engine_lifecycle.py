"""A job's life through the engine: the states it passes, how it is stopped, how it times out."""

from __future__ import annotations

import signal
import threading
import time

from helpers import (
    PY,
    Recorder,
    alive,
    kill_if_alive,
    read_lines,
    running_engine,
    wait_dead,
    wait_until,
)

from worker_core import EndReason, Engine, Job, JobSpec, JobState


def test_a_job_that_runs_to_completion_goes_pending_running_ended(
    engine: Engine, recorder: Recorder
) -> None:
    job = engine.submit(JobSpec("/bin/sh", args=["-c", "exit 3"]))
    ended = engine.wait(job.id, timeout=5)
    assert ended.state is JobState.ENDED
    assert ended.end_reason is EndReason.EXITED and ended.exit_code == 3
    assert ended.signal is None and ended.message == "exited with code 3"
    assert recorder.states(job.id) == [JobState.PENDING, JobState.RUNNING, JobState.ENDED]
    previous = [v[2] for k, v in recorder.of(job.id) if k == "state"]
    assert previous == [None, JobState.PENDING, JobState.RUNNING]
    assert ended.created_at <= ended.started_at <= ended.ended_at  # type: ignore[operator]


def test_a_stopped_job_passes_through_stopping(engine: Engine, recorder: Recorder) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
    stopped = engine.stop(job.id, grace=2)
    assert stopped.state is JobState.ENDED and stopped.end_reason is EndReason.STOPPED
    assert stopped.signal == signal.SIGTERM
    assert recorder.states(job.id) == [
        JobState.PENDING,
        JobState.RUNNING,
        JobState.STOPPING,
        JobState.ENDED,
    ]


def test_watch_yields_every_record_until_ended(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["0.2"]))
    watcher = engine.watch(job.id)
    seen: list[Job] = []
    deadline = time.monotonic() + 30
    while (record := watcher.next(timeout=max(0.0, deadline - time.monotonic()))) is not None:
        seen.append(record)
    assert seen and seen[-1].state is JobState.ENDED
    states = [r.state for r in seen]
    assert states == sorted(states, key=list(JobState).index)


def test_stop_of_a_job_ignoring_sigterm_escalates_to_sigkill_after_the_grace_period(
    engine: Engine,
) -> None:
    job = engine.submit(
        JobSpec("/bin/sh", args=["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"])
    )
    read_lines(engine, job.id, 1)  # the trap is in place
    start = time.monotonic()
    # The job would ignore SIGTERM forever: ended at all means SIGKILL followed.
    stopped = engine.stop(job.id, grace=0.5, timeout=60)
    took = time.monotonic() - start
    assert stopped.end_reason is EndReason.STOPPED and stopped.signal == signal.SIGKILL
    # Not before the grace ran out (a busy host can only make it later).
    assert took >= 0.45, f"SIGKILL came {took:.2f}s after SIGTERM, before the 0.5 s grace"
    assert wait_dead(job.pid, 30)  # type: ignore[arg-type]


# A child that has called setsid (and said so through a pipe) before the job prints its pid.
SETSID_CHILD = (
    "import os, time\n"
    "r, w = os.pipe()\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.setsid(); os.write(w, b'x'); time.sleep(60); os._exit(0)\n"
    "os.read(r, 1)\n"
    "print(pid, flush=True)\n"
    "time.sleep(60)\n"
)


def test_stop_kills_a_child_that_started_its_own_session(engine: Engine) -> None:
    # The child left the job's process group with setsid: a killpg alone misses it, only the
    # walk of the job's descendants can reach it. Five jobs at once make a lucky pass unlikely.
    jobs = [engine.submit(JobSpec(PY, args=["-c", SETSID_CHILD])) for _ in range(5)]
    children = [int(read_lines(engine, job.id, 1)[0]) for job in jobs]
    try:
        assert all(alive(child) for child in children)
        stoppers = [
            threading.Thread(target=engine.stop, args=(job.id,), kwargs={"grace": 2})
            for job in jobs
        ]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(10)
        assert all(engine.get(job.id).end_reason is EndReason.STOPPED for job in jobs)
        wait_until(lambda: not any(alive(child) for child in children), 30)
        survivors = [child for child in children if alive(child)]
        assert not survivors, f"setsid children survived the stop: {survivors}"
    finally:
        for child in children:
            kill_if_alive(child)


def test_stopping_a_finished_job_returns_its_final_record_unchanged(engine: Engine) -> None:
    done = engine.wait(engine.submit(JobSpec("/bin/true")).id, timeout=5)
    assert done.end_reason is EndReason.EXITED
    assert engine.stop(done.id) == done
    assert engine.stop(done.id, force=True) == done


def test_concurrent_stops_of_one_job_agree_on_one_final_record(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
    results: list[Job] = []
    lock = threading.Lock()

    def stop() -> None:
        record = engine.stop(job.id, grace=1)
        with lock:
            results.append(record)

    threads = [threading.Thread(target=stop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8
    records = {(r.state, r.end_reason, r.signal, r.exit_code, r.ended_at) for r in results}
    assert len(records) == 1, "every stopper sees the same final record"
    assert results[0].end_reason is EndReason.STOPPED and results[0].is_finished


def test_stop_with_force_kills_at_once_without_waiting_for_the_grace(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sh", args=["-c", "trap '' TERM; echo ready; sleep 600"]))
    read_lines(engine, job.id, 1)
    # Ended within the stop's 60 s, with a 300 s grace: the grace was not waited for.
    stopped = engine.stop(job.id, grace=300, force=True, timeout=60)
    assert stopped.end_reason is EndReason.STOPPED and stopped.signal == signal.SIGKILL


def test_force_after_a_graceful_stop_cuts_the_grace_short(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/sh", args=["-c", "trap '' TERM; echo ready; sleep 600"]))
    read_lines(engine, job.id, 1)
    first = engine.stop(job.id, grace=300, timeout=0.2)
    assert first.state is JobState.STOPPING, "still in its grace period"
    # As above: ended within 60 s of a 300 s grace is the grace cut short.
    stopped = engine.stop(job.id, force=True, timeout=60)
    assert stopped.signal == signal.SIGKILL and stopped.end_reason is EndReason.STOPPED


def test_a_job_past_its_time_limit_is_stopped_as_timed_out(engine: Engine) -> None:
    start = time.monotonic()
    job = engine.submit(JobSpec("/bin/sleep", args=["600"], timeout=0.5))
    ended = engine.wait(job.id, timeout=60)
    assert ended.end_reason is EndReason.TIMED_OUT
    assert ended.signal == signal.SIGTERM and "0.5s time limit" in ended.message
    # Not before its limit (a busy host can only make it later).
    assert time.monotonic() - start >= 0.45


def test_a_job_that_ends_before_its_time_limit_is_not_timed_out(engine: Engine) -> None:
    job = engine.submit(JobSpec("/bin/true", timeout=0.3))
    assert engine.wait(job.id, timeout=5).end_reason is EndReason.EXITED
    time.sleep(0.4)  # the timer fires after the job ended: it must change nothing
    assert engine.get(job.id).end_reason is EndReason.EXITED


def test_a_job_killed_by_a_signal_nobody_here_sent_ends_exited_with_that_signal(
    engine: Engine,
) -> None:
    job = engine.submit(JobSpec("/bin/sh", args=["-c", "kill -9 $$"]))
    ended = engine.wait(job.id, timeout=5)
    assert ended.end_reason is EndReason.EXITED
    assert ended.signal == signal.SIGKILL and ended.exit_code is None
    assert "SIGKILL" in ended.message


def test_close_stops_every_running_job_with_reason_shutdown_and_leaves_no_process() -> None:
    with running_engine(stop_grace=0.5) as engine:
        jobs = [engine.submit(JobSpec("/bin/sleep", args=["30"])) for _ in range(5)]
    pids = [j.pid for j in jobs]
    assert all(wait_dead(pid, 30) for pid in pids)  # type: ignore[arg-type]
    assert all(engine.get(j.id).end_reason is EndReason.SHUTDOWN for j in jobs)
