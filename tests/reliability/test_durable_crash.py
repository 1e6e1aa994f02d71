"""Crash consistency: ``worker serve --state-dir DIR`` SIGKILLed at random moments while 16
clients submit jobs that write output, then restarted on the same directory, cycle after
cycle; every few cycles a server is also killed while it starts (during recovery).

After every crash, before the restart: the job database (a copy of it and its WAL, as the
next server reads them) passes ``PRAGMA integrity_check``, and no process of any job and
not the launcher outlived the server. After every restart: every acknowledged job (Submit
returned its id) is there; no record is left pending, running or stopping (those are ENDED,
lost, saying the server stopped while they ran); every job seen to finish before a crash
has the same record and replays the same bytes at the same offsets as it did then, and what
a follower had read of a job cut short is a prefix of its replay.

The number of cycles is ``WORKER_CRASH_CYCLES`` (20 by default); the random moments come
from ``WORKER_CRASH_SEED`` (printed, so a failing run can be repeated).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import attrs
import grpc
import pytest
from grpc_certs import TestPKI, make_pki
from grpc_harness import collect, shell, spawn_serve, wait_for
from helpers import alive
from reliability_harness import (
    RPC_TIMEOUT,
    ServerProcess,
    integrity_check,
    job_processes_by_id,
    list_all,
    sigkill,
    worker_serve,
    write_config,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

CYCLES = int(os.environ.get("WORKER_CRASH_CYCLES", "20"))
SEED = int(os.environ.get("WORKER_CRASH_SEED", str(time.time_ns() % 1_000_000)))
CLIENTS = 16

#: The longest a cycle runs its clients before the SIGKILL (the moment is uniform below it).
MAX_LOAD_SECONDS = 2.0

#: A short job and one still writing for about a second, so a crash finds some mid-way.
OUTPUT = "head -c 20000 /dev/urandom | od | head -c 5000"
SHORT = shell(f"for i in 1 2 3; do echo $i; done; {OUTPUT}")
SLOW = shell(f"for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.3; done; {OUTPUT}")
#: What each writes to stdout when it runs to its end.
STDOUT_BYTES = len("1\n2\n3\n") + 5000

#: One cycle in this many also kills a server while it starts.
STARTUP_CRASH_EVERY = 5

#: Older finished jobs checked again after each restart (all of them after the last one).
SAMPLE = 30

#: Every state but ENDED.
ACTIVE = [
    pb.JOB_STATE_PENDING,
    pb.JOB_STATE_RUNNING,
    pb.JOB_STATE_STOPPING,
    pb.JOB_STATE_QUEUED,
    pb.JOB_STATE_HELD,
    pb.JOB_STATE_PAUSED,
]


@attrs.define
class Seen:
    """What the clients learnt, over every cycle."""

    lock: threading.Lock = attrs.Factory(threading.Lock)
    #: Acknowledged jobs: id -> the cycle it was submitted in.
    acknowledged: dict[str, int] = attrs.Factory(dict)
    #: Jobs whose whole output a follower read (so they had ended): id -> stream -> bytes.
    finished: dict[str, dict[int, bytes]] = attrs.Factory(dict)
    #: Their records, read right after (when the crash left time to).
    records: dict[str, pb.Job] = attrs.Factory(dict)
    #: What a follower had read of a job when the crash cut it: id -> stream -> bytes.
    partial: dict[str, dict[int, bytes]] = attrs.Factory(dict)
    #: Errors that were not the crash.
    failures: list[str] = attrs.Factory(list)
    #: Jobs that ended, checked, by cycle.
    finished_in: dict[str, int] = attrs.Factory(dict)


def _collect_partial(call: grpc.Call) -> tuple[dict[int, bytes], bool]:
    """What a Tail delivered, and whether it ended normally (the job ended, all was read)."""
    data: dict[int, bytearray] = {}
    try:
        for message in call:
            buf = data.setdefault(message.stream, bytearray())
            assert message.offset == len(buf), "a gap or an overlap in a live Tail"
            buf += message.data
    except grpc.RpcError:
        return {k: bytes(v) for k, v in data.items()}, False
    return {k: bytes(v) for k, v in data.items()}, True


def _client(
    server: ServerProcess, index: int, cycle: int, seen: Seen, crashed: threading.Event
) -> None:
    try:
        _submit_and_follow(server, index, cycle, seen, crashed)
    except Exception as exc:  # a thread's exception would otherwise vanish
        with seen.lock:
            seen.failures.append(f"cycle {cycle}: client {index}: {type(exc).__name__}: {exc}")


def _submit_and_follow(
    server: ServerProcess, index: int, cycle: int, seen: Seen, crashed: threading.Event
) -> None:
    rng = random.Random(SEED * 1000 + cycle * 100 + index)
    stub = server.stub(f"client-{index}")
    while not crashed.is_set():
        try:
            job = stub.Submit(
                pb.SubmitRequest(spec=SLOW if rng.random() < 0.25 else SHORT), timeout=RPC_TIMEOUT
            ).job
        except grpc.RpcError as exc:
            if not crashed.is_set():
                with seen.lock:
                    seen.failures.append(f"cycle {cycle}: Submit: {exc.code()}: {exc.details()}")
            return
        with seen.lock:
            seen.acknowledged[job.id] = cycle
        got, complete = _collect_partial(
            stub.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT)
        )
        if not complete:
            with seen.lock:
                seen.partial[job.id] = got
            if not crashed.is_set():
                with seen.lock:
                    seen.failures.append(f"cycle {cycle}: Tail of {job.id} failed before the crash")
            return
        with seen.lock:
            seen.finished[job.id] = got
            seen.finished_in[job.id] = cycle
        try:
            record = stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
        except grpc.RpcError:
            return  # the crash came first: the output alone is checked
        with seen.lock:
            seen.records[job.id] = record


def _check_after_restart(server: ServerProcess, seen: Seen, cycle: int, every: bool) -> int:
    """Check what a restarted server holds against what was seen; the jobs checked."""
    stub = server.stub("checker")
    assert list_all(stub, pb.ListRequest(states=ACTIVE)) == [], "records left unfinished"
    records = {job.id: job for job in list_all(stub)}
    missing = set(seen.acknowledged) - set(records)
    assert not missing, f"acknowledged jobs missing after the restart: {sorted(missing)[:5]}"
    for job_id in seen.acknowledged:
        record = records[job_id]
        assert record.state == pb.JOB_STATE_ENDED, record
        if record.end_reason == pb.END_REASON_LOST:
            assert "stopped while it ran" in record.message, record.message
        else:
            assert record.end_reason == pb.END_REASON_EXITED, record
            assert record.exit_code == 0, record
    rng = random.Random(SEED + cycle)
    finished = list(seen.finished)
    recent = [j for j in finished if seen.finished_in[j] >= cycle - 1]
    older = [j for j in finished if seen.finished_in[j] < cycle - 1]
    check = finished if every else recent + rng.sample(older, min(SAMPLE, len(older)))
    for job_id in check:
        assert records[job_id].end_reason == pb.END_REASON_EXITED, records[job_id]
        if job_id in seen.records:
            assert records[job_id] == seen.records[job_id], "a finished job's record changed"
        replayed = collect(stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT))
        assert replayed == seen.finished[job_id], f"job {job_id}: the replay differs"
        assert len(replayed[pb.STREAM_STDOUT]) == STDOUT_BYTES
    for job_id, got in seen.partial.items():
        replayed = collect(stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT))
        for stream, data in got.items():
            assert replayed.get(stream, b"").startswith(data), (
                f"job {job_id}: what a follower read before the crash is not in the replay"
            )
    return len(check) + len(seen.partial)


def _run_cycle(
    tmp_path: Path, pki: TestPKI, state: Path, config: Path, seen: Seen, cycle: int
) -> tuple[int, int]:
    """Start, check the last cycle's crash, load, SIGKILL; (jobs checked, jobs submitted).

    Every few cycles the server is first also killed while it starts (recovery ends the
    jobs the last crash left running before the server listens)."""
    rng = random.Random(SEED + 7919 * cycle)
    if cycle % STARTUP_CRASH_EVERY == STARTUP_CRASH_EVERY - 1:
        starting = spawn_serve(pki, "--state-dir", str(state), "--config", str(config))
        time.sleep(rng.uniform(0.2, 1.5))
        starting.reap()
        assert integrity_check(state / "jobs.sqlite3") == ["ok"], f"cycle {cycle}, at start"
    with worker_serve(
        tmp_path / "runs", "--state-dir", str(state), "--config", str(config), pki=pki
    ) as server:
        checked = _check_after_restart(server, seen, cycle, every=False) if cycle else 0
        before = len(seen.acknowledged)
        crashed = threading.Event()
        clients = [
            threading.Thread(target=_client, args=(server, i, cycle, seen, crashed), daemon=True)
            for i in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        time.sleep(rng.uniform(0.0, MAX_LOAD_SECONDS))
        with seen.lock:
            acknowledged = list(seen.acknowledged)
        running = [p for i, ps in job_processes_by_id().items() if i in acknowledged for p in ps]
        crashed.set()
        tree = sigkill(server)
        for thread in clients:
            thread.join(RPC_TIMEOUT + 10)
        assert not any(t.is_alive() for t in clients), "a client hung after the crash"
    wait_for(
        lambda: not any(alive(p) for p in [*tree, *running]),
        timeout=30,
        what="the launcher and every job to die with the server",
    )
    with seen.lock:
        ids = set(seen.acknowledged)
    survivors = {i: p for i, p in job_processes_by_id().items() if i in ids}
    assert not survivors, f"job processes outlived the SIGKILLed server: {survivors}"
    assert integrity_check(state / "jobs.sqlite3") == ["ok"], f"cycle {cycle}"
    return checked, len(seen.acknowledged) - before


@pytest.mark.slow
def test_sigkill_at_random_moments_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    config = write_config(
        tmp_path / "server.toml",
        "[engine]\nstop_grace = 1.0\n\n[plugins.grpc]\nmax_streams_per_client = 256\n",
    )
    state = tmp_path / "state"
    seen = Seen()
    print(f"\nWORKER_CRASH_SEED={SEED} WORKER_CRASH_CYCLES={CYCLES}")
    started = time.monotonic()
    for cycle in range(CYCLES):
        checked, submitted = _run_cycle(tmp_path, pki, state, config, seen, cycle)
        print(
            f"cycle {cycle:2d}: {checked:4d} jobs checked after the restart, "
            f"{submitted:3d} submitted before the SIGKILL"
        )
    assert not seen.failures, seen.failures[:5]

    with worker_serve(
        tmp_path / "runs", "--state-dir", str(state), "--config", str(config), pki=pki
    ) as server:
        checked = _check_after_restart(server, seen, CYCLES, every=True)
        lost = [
            j
            for j in list_all(server.stub())
            if j.end_reason == pb.END_REASON_LOST and j.id in seen.acknowledged
        ]
        assert server.stop() == 0
    conn = sqlite3.connect(f"file:{state / 'jobs.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
    finally:
        conn.close()
    print(
        f"{CYCLES} crashes in {time.monotonic() - started:.0f} s: {len(seen.acknowledged)} jobs "
        f"acknowledged, {len(seen.finished)} seen to finish and replayed identically, "
        f"{len(lost)} lost (running at a crash), {len(seen.partial)} followers cut mid-way"
    )
    assert seen.finished and lost, "the crashes never found a job both finished and running"
