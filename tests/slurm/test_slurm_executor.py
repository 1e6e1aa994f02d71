"""The ``slurm`` executor against a real slurmctld and slurmd: a real engine submits with
sbatch, follows the output files, reads status from squeue, stops with scancel and pauses
with scontrol, and the cluster (not this process) enforces the limits."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import assert_contiguous, drain, joined, wait_until
from slurm_harness import SlurmCluster
from slurm_helpers import WAIT, EngineFactory, gate, sh

from worker_core import (
    Dependency,
    DependencyKind,
    EndReason,
    InvalidSpec,
    IOLimit,
    Isolation,
    JobSpec,
    JobState,
    Limits,
    QueueReason,
    Stream,
)

MIB = 1 << 20


# ------------------------------------------------------------------ running and output


def test_a_job_runs_as_a_slurm_batch_job_with_its_output_and_exit_code(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    engine = slurm_engine()
    job = engine.submit(sh("echo out; echo err >&2; printf 'no newline'; exit 3", name="first"))
    assert job.state is JobState.RUNNING and job.external_id is not None
    assert job.external_id.isdigit()
    ended = engine.wait(job.id, WAIT)
    assert ended.end_reason is EndReason.EXITED and ended.exit_code == 3
    assert engine.output(job.id) == b"out\nno newline"
    assert engine.output(job.id, Stream.STDERR) == b"err\n"
    # It really was Slurm's job: squeue knows it by the worker's id, name and exit status.
    assert job.id in slurm_cluster.worker_ids()
    assert slurm_cluster.squeue(job.external_id, "Name") == "first"
    assert slurm_cluster.squeue(job.external_id, "State") == "FAILED"
    assert ended.facts["slurm_state"] == "FAILED"
    assert ended.facts["slurm_nodes"] == slurm_cluster.nodes[0]
    # Its files were followed into the engine's store and then removed.
    assert list((tmp_path / "slurm-output").iterdir()) == []


def test_a_follower_sees_output_as_the_job_writes_it(
    slurm_engine: EngineFactory, tmp_path: Path
) -> None:
    engine = slurm_engine()
    path, wait_for_gate = gate(tmp_path, "go")
    job = engine.submit(sh(f"echo one; {wait_for_gate}; echo two; echo late >&2"))
    follower = engine.follow(job.id)
    first: list[bytes] = []
    deadline = time.monotonic() + WAIT
    while b"one\n" not in b"".join(first) and time.monotonic() < deadline:
        for chunk in follower.read(timeout=1.0) or []:
            first.append(chunk.data)
    # The first line arrived while the job still waits: live, not at the end.
    assert b"".join(first) == b"one\n"
    assert engine.get(job.id).state is JobState.RUNNING
    path.touch()
    rest = drain(follower, WAIT)
    assert joined(rest, Stream.STDOUT) == b"two\n"
    assert joined(rest, Stream.STDERR) == b"late\n"
    assert engine.get(job.id).exit_code == 0
    # A follower that comes afterwards replays every byte, and may resume from an offset.
    replay = drain(engine.follow(job.id), WAIT)
    assert joined(replay, Stream.STDOUT) == b"one\ntwo\n"
    resumed = drain(engine.follow(job.id, start={Stream.STDOUT: 4, Stream.STDERR: 0}), WAIT)
    assert joined(resumed, Stream.STDOUT) == b"two\n"


def test_output_larger_than_one_read_arrives_whole_and_in_order(
    slurm_engine: EngineFactory,
) -> None:
    engine = slurm_engine()
    size = 5_000_000  # several of the follower's 1 MiB reads
    job = engine.submit(sh(f"seq 1 1000000 | head -c {size}; seq 1 1000 >&2"))
    chunks = drain(engine.follow(job.id), WAIT)
    assert assert_contiguous(chunks, Stream.STDOUT) == size
    expected = subprocess.run(
        ["sh", "-c", f"seq 1 1000000 | head -c {size}"], capture_output=True, check=True
    ).stdout
    assert joined(chunks, Stream.STDOUT) == expected
    assert joined(chunks, Stream.STDERR) == "".join(f"{i}\n" for i in range(1, 1001)).encode()
    assert engine.get(job.id).facts["output_bytes"] == size + 3893


def test_the_job_gets_exactly_the_specs_environment_working_directory_and_name(
    slurm_engine: EngineFactory,
    slurm_cluster: SlurmCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_SERVER_ONLY", "must not leak")
    monkeypatch.setenv("SBATCH_PARTITION", "nonexistent")  # would break sbatch if it leaked
    engine = slurm_engine()
    env = {
        "COMMAS": "a,b,c",
        "QUOTES": 'it\'s "quoted"',
        "NEWLINE": "one\ntwo",
        "EQUALS": "x=y=z",
        "EMPTY": "",
    }
    work = tmp_path / "work dir"
    work.mkdir()
    job = engine.submit(
        JobSpec("/usr/bin/env", args=["-0"], env=env, cwd=str(work), name="env, quoted 'name'")
    )
    running = engine.get(job.id)
    assert running.external_id is not None
    assert slurm_cluster.squeue(running.external_id, "Name") == "env, quoted 'name'"
    assert engine.wait(job.id, WAIT).exit_code == 0
    entries = [e for e in engine.output(job.id).split(b"\0") if e]
    seen = dict(e.decode().split("=", 1) for e in entries)
    # Slurm adds its own per-job variables; everything else is the spec's, exactly.
    slurm_added = {"HOSTNAME", "ENVIRONMENT", "TMPDIR", "PWD"}
    ours = {k: v for k, v in seen.items() if not k.startswith("SLURM") and k not in slurm_added}
    assert ours == {**env, "PATH": ours["PATH"], "WORKER_JOB_ID": job.id}
    assert "WORKER_SERVER_ONLY" not in seen
    assert seen["PWD"] == str(work)


def test_exit_codes_and_signals_come_back_from_slurm(slurm_engine: EngineFactory) -> None:
    engine = slurm_engine()
    jobs = {
        "ok": engine.submit(sh("exit 0")),
        "code": engine.submit(sh("exit 42")),
        "killed": engine.submit(sh("kill -KILL $$")),
        "terminated": engine.submit(sh("kill -TERM $$")),
        "missing": engine.submit(sh("exec /nonexistent/program")),
    }
    ended = {name: engine.wait(job.id, WAIT) for name, job in jobs.items()}
    assert {name: (j.end_reason, j.exit_code, j.signal) for name, j in ended.items()} == {
        "ok": (EndReason.EXITED, 0, None),
        "code": (EndReason.EXITED, 42, None),
        "killed": (EndReason.EXITED, None, signal.SIGKILL),
        "terminated": (EndReason.EXITED, None, signal.SIGTERM),
        "missing": (EndReason.EXITED, 127, None),
    }
    assert ended["ok"].facts["slurm_state"] == "COMPLETED"
    assert b"nonexistent" in engine.output(jobs["missing"].id, Stream.STDERR)


# ------------------------------------------------------------------ stopping and pausing


def test_stop_is_term_then_kill_and_a_job_ignoring_term_still_ends(
    slurm_engine: EngineFactory,
) -> None:
    engine = slurm_engine()
    stubborn = engine.submit(
        sh("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done")
    )
    polite = engine.submit(sh("echo ready; exec sleep 300"))
    for job in (stubborn, polite):
        assert wait_until(lambda j=job: b"ready" in engine.output(j.id), WAIT)
    polite_end = engine.stop(polite.id, grace=30, timeout=WAIT)
    assert polite_end.end_reason is EndReason.STOPPED
    assert polite_end.signal == signal.SIGTERM, "SIGTERM alone ended it, within the grace"
    stubborn_end = engine.stop(stubborn.id, grace=1, timeout=WAIT)
    assert stubborn_end.state is JobState.ENDED
    assert stubborn_end.end_reason is EndReason.STOPPED
    assert stubborn_end.signal == signal.SIGKILL
    # SIGTERM reached the job first (its trap ran), then SIGKILL ended it.
    assert engine.output(stubborn.id).count(b"got TERM") == 1


def test_pause_and_resume_suspend_and_resume_the_slurm_job(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    engine = slurm_engine()
    path, wait_for_gate = gate(tmp_path, "go")
    job = engine.submit(sh(f"echo started; {wait_for_gate}; echo finished"))
    assert wait_until(lambda: b"started" in engine.output(job.id), WAIT)
    slurm_id = engine.get(job.id).external_id
    assert slurm_id is not None
    assert engine.pause(job.id).state is JobState.PAUSED
    assert slurm_cluster.squeue(slurm_id, "State") == "SUSPENDED"
    path.touch()
    time.sleep(0.5)  # suspended, it cannot see the gate: no output comes
    assert engine.output(job.id) == b"started\n"
    assert engine.resume(job.id).state is JobState.RUNNING
    assert engine.wait(job.id, WAIT).exit_code == 0
    assert engine.output(job.id) == b"started\nfinished\n"


def test_a_job_past_its_time_limit_is_stopped_and_slurm_has_the_limit_too(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster
) -> None:
    engine = slurm_engine()
    job = engine.submit(sh("exec sleep 300", timeout=1.5))
    slurm_id = engine.get(job.id).external_id
    assert slurm_id is not None
    # Rounded up to whole minutes for Slurm, the backstop when the worker is not running.
    assert slurm_cluster.squeue(slurm_id, "TimeLimit") == "1:00"
    ended = engine.wait(job.id, WAIT)
    assert ended.end_reason is EndReason.TIMED_OUT


# ------------------------------------------------------------------ limits


def test_the_memory_limit_is_enforced_by_slurm(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster
) -> None:
    engine = slurm_engine()
    grab = "b = bytearray({} << 20); print(len(b) >> 20, flush=True)"
    over = engine.submit(
        JobSpec("python3", args=["-c", grab.format(256)], limits=Limits(memory_max=64 * MIB))
    )
    under = engine.submit(
        JobSpec("python3", args=["-c", grab.format(16)], limits=Limits(memory_max=64 * MIB + 1))
    )
    for job in (over, under):
        slurm_id = engine.get(job.id).external_id
        assert slurm_id is not None
        # 64 MiB + 1 byte is rounded up to a whole MiB.
        expected = "64M" if job is over else "65M"
        assert slurm_cluster.squeue(slurm_id, "MinMemory") == expected
    over_end = engine.wait(over.id, WAIT)
    assert over_end.end_reason is EndReason.OOM_KILLED
    assert over_end.facts["oom_killed"] is True
    assert over_end.facts["slurm_state"] == "OUT_OF_MEMORY"
    assert engine.output(over.id) == b""
    under_end = engine.wait(under.id, WAIT)
    assert under_end.exit_code == 0 and engine.output(under.id) == b"16\n"


def test_a_cpu_fraction_becomes_whole_cpus_the_job_is_confined_to(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster
) -> None:
    engine = slurm_engine()
    half = engine.submit(JobSpec("nproc", limits=Limits(cpu=0.5)))
    two = engine.submit(JobSpec("nproc", limits=Limits(cpu=1.5)))
    assert engine.wait(half.id, WAIT).exit_code == 0
    assert engine.wait(two.id, WAIT).exit_code == 0
    assert engine.output(half.id) == b"1\n", "0.5 CPU rounds up to one CPU, and only one"
    assert engine.output(two.id) == b"2\n"
    slurm_id = engine.get(two.id).external_id
    assert slurm_id is not None
    assert slurm_cluster.squeue(slurm_id, "cpus-per-task") == "2"


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (sh("true", limits=Limits(pids_max=10)), "limits.pids_max", "process cap"),
        (sh("true", limits=Limits(memory_high=MIB)), "limits.memory_high", "soft memory"),
        (sh("true", limits=Limits(io=(IOLimit("8:0", read_bps=1),))), "limits.io", "IO"),
        (sh("true", limits=Limits(cpu_weight=10)), "limits.cpu_weight", "CPU weight"),
        (sh("true", isolation=Isolation(uid=1000)), "isolation.uid", "user the server"),
        (sh("true", options={"slurm.partition": "x"}), "options.slurm.partition", "options"),
    ],
)
def test_what_slurm_cannot_enforce_is_refused_and_nothing_is_submitted(
    slurm_engine: EngineFactory,
    slurm_cluster: SlurmCluster,
    spec: JobSpec,
    field: str,
    words: str,
) -> None:
    engine = slurm_engine()
    before = slurm_cluster.worker_ids()
    with pytest.raises(InvalidSpec, match=words) as refused:
        engine.submit(spec)
    assert refused.value.field == field
    assert engine.list() == []
    assert slurm_cluster.worker_ids() == before


def test_a_limit_the_cluster_does_not_enforce_is_refused(slurm_engine: EngineFactory) -> None:
    engine = slurm_engine()
    executor = engine.plugin_manager.get_plugin("slurm")._executor  # type: ignore[union-attr]
    # As a cluster without ConstrainRAMSpace would report itself (read at start).
    executor.capabilities = type(executor.capabilities).from_config(
        {"TaskPlugin": "task/none", "SelectTypeParameters": "CR_CPU"}
    )
    with pytest.raises(InvalidSpec, match="does not enforce memory limits") as refused:
        engine.submit(sh("true", limits=Limits(memory_max=64 * MIB)))
    assert refused.value.field == "limits.memory_max"
    with pytest.raises(InvalidSpec, match="does not confine jobs to their CPUs"):
        engine.submit(sh("true", limits=Limits(cpu=1)))


# ------------------------------------------------------------------ scheduling


def test_dependencies_reach_slurm_only_once_met(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    engine = slurm_engine()
    path, wait_for_gate = gate(tmp_path, "go")
    first = engine.submit(sh(f"{wait_for_gate}; echo first"))
    after_ok = engine.submit(sh("echo second", after=[Dependency(first.id)]))
    after_failed = engine.submit(
        sh("echo never", after=[Dependency(first.id, DependencyKind.FAILED)])
    )
    for waiting in (after_ok, after_failed):
        record = engine.get(waiting.id)
        assert record.state is JobState.QUEUED
        assert record.queue_reason is QueueReason.DEPENDENCY
        assert record.external_id is None
    assert {after_ok.id, after_failed.id}.isdisjoint(slurm_cluster.worker_ids())
    path.touch()
    first_end = engine.wait(first.id, WAIT)
    second_end = engine.wait(after_ok.id, WAIT)
    assert second_end.exit_code == 0 and engine.output(after_ok.id) == b"second\n"
    assert second_end.started_at is not None and first_end.ended_at is not None
    assert second_end.started_at >= first_end.ended_at
    assert after_ok.id in slurm_cluster.worker_ids()
    never = engine.wait(after_failed.id, WAIT)
    assert never.end_reason is EndReason.DEPENDENCY_FAILED and never.external_id is None
    assert after_failed.id not in slurm_cluster.worker_ids()


def test_a_held_job_reaches_slurm_only_when_released(
    slurm_engine: EngineFactory, slurm_cluster: SlurmCluster
) -> None:
    engine = slurm_engine()
    held = engine.submit(sh("echo released", hold=True))
    assert held.state is JobState.HELD and held.external_id is None
    assert held.id not in slurm_cluster.worker_ids()
    engine.release(held.id)
    ended = engine.wait(held.id, WAIT)
    assert ended.exit_code == 0 and engine.output(held.id) == b"released\n"
    assert held.id in slurm_cluster.worker_ids()


# ------------------------------------------------------------------ failures


def test_a_submission_slurm_refuses_fails_to_start_with_slurms_words(
    slurm_engine: EngineFactory,
) -> None:
    engine = slurm_engine(partition="nosuchpartition")
    job = engine.submit(sh("true"))
    ended = engine.wait(job.id, WAIT)
    assert ended.end_reason is EndReason.FAILED_TO_START
    assert "sbatch" in ended.message and "partition" in ended.message.lower()
    assert ended.external_id is None


def test_an_unreachable_cluster_or_a_missing_output_dir_stops_the_start(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    from slurm_helpers import slurm_config

    from worker_core import ConfigError, Engine, PluginError

    missing = tmp_path / "no-such-slurm.conf"
    with pytest.raises(ConfigError, match=r"slurm_conf: .*no-such-slurm.conf is not a file"):
        Engine(["slurm"], slurm_config(slurm_cluster, tmp_path, slurm_conf=str(missing)))
    # A controller that never answers: the port of a listener that accepts and stays silent.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    dead = tmp_path / "silent.conf"
    port = silent.getsockname()[1]
    dead.write_text(
        re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={port}", slurm_cluster.conf.read_text())
    )
    try:
        config = slurm_config(slurm_cluster, tmp_path, slurm_conf=str(dead), command_timeout=1)
        with pytest.raises(PluginError, match=r"cannot reach the Slurm cluster: .*within 1 s"):
            Engine(["slurm"], config).start()
    finally:
        silent.close()
    with pytest.raises(
        PluginError, match=r"scontrol: not found in /nonexistent \(\[plugins.slurm\] bin_dir\)"
    ):
        Engine(["slurm"], slurm_config(slurm_cluster, tmp_path, bin_dir="/nonexistent")).start()
    with pytest.raises(ConfigError, match="output_dir: required without a state directory"):
        Engine(["slurm"], slurm_config(slurm_cluster, tmp_path, output_dir=None))
    with pytest.raises(ConfigError, match="poll_interval"):
        Engine(["slurm"], slurm_config(slurm_cluster, tmp_path, poll_interval=0))
    assert not (tmp_path / "slurm-output").exists()


def test_a_plugin_for_this_hosts_launcher_is_never_silently_ignored(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """netns asks for a network namespace Slurm's nodes cannot make: the engine refuses the
    plugin at start (once it declares itself local_only), or the executor refuses the plan."""
    from slurm_helpers import slurm_config

    from worker_core import Engine, PluginError

    engine = Engine(["slurm", "netns"], slurm_config(slurm_cluster, tmp_path))
    try:
        engine.start()
    except PluginError as exc:
        assert "cannot be used with the 'slurm' executor" in str(exc)
        return
    try:
        ended = engine.wait(engine.submit(sh("true")).id, WAIT)
    finally:
        engine.close()
    assert ended.end_reason is EndReason.FAILED_TO_START
    assert "namespaces (net)" in ended.message and "disable that plugin" in ended.message
