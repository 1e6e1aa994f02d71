"""Faults at the server level, against a real ``worker serve`` process over mTLS.

- The server is SIGKILLed while jobs run (one ignores SIGTERM, one daemonizes out of its
  session): no job process survives, and the next server removes the leftover cgroups and
  says so on stderr.
- A follower stops reading entirely (HTTP/2 flow control, and a TCP connection whose reader
  stalled): the job runs at full speed, other followers get everything, the server's memory
  stays bounded and other calls are served.
- Followers vanish mid-stream (a killed client process, a connection reset): the others
  continue and the server releases what the vanished ones held.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import grpc
import pytest
from cgroup_helpers import cgroup_dirs_named, force_remove_parent, require_root, unique_parent
from grpc_harness import shell, wait_for
from reliability_harness import (
    RPC_TIMEOUT,
    MiB,
    Relay,
    ServerProcess,
    alive,
    descendants,
    processes_with_job_id,
    stdout_digest,
    submit,
    wait_ended,
    worker_serve,
    write_config,
    zeros_digest,
)

from worker_plugins.grpc_transport import worker_pb2 as pb

#: Double-forks a daemon (new session), prints its pid, then both sleep.
DAEMONIZE = textwrap.dedent(
    """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            print(os.getpid(), flush=True)
            time.sleep(300)
        os._exit(0)
    time.sleep(300)
    """
)


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    require_root()
    parent = unique_parent()
    try:
        yield parent
    finally:
        force_remove_parent(parent)


def _first_line(server: ServerProcess, job_id: str) -> str:
    call = server.stub().Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)
    data = b""
    for message in call:
        data += message.data
        if b"\n" in data:
            call.cancel()
            break
    return data.decode().split("\n", 1)[0]


def test_sigkilled_server_leaves_no_job_and_restart_cleans_leftover_cgroups(
    tmp_path: Path, cgroup_parent: str
) -> None:
    config = write_config(
        tmp_path / "server.toml",
        f'[engine]\nstop_grace = 1.0\n\n[plugins.cgroups]\nparent = "{cgroup_parent}"\n',
    )
    flags = ("--plugins", "cgroups", "--config", str(config))
    with worker_serve(tmp_path / "first", *flags) as server:
        stub = server.stub()
        jobs = [
            submit(stub, shell("sleep 300")),
            submit(stub, shell("trap '' TERM; echo up; while :; do sleep 0.1; done")),
            submit(stub, pb.JobSpec(command=sys.executable, args=["-c", DAEMONIZE])),
        ]
        daemon = int(_first_line(server, jobs[2].id))
        assert _first_line(server, jobs[1].id) == "up"
        job_pids = {pid for job in jobs for pid in processes_with_job_id(job.id)}
        assert daemon in job_pids and len(job_pids) >= 5  # sh + sleeps, the daemon, its parent
        tree = descendants(server.pid)  # the launcher and the jobs' main processes
        assert {job.pid for job in jobs} <= tree

        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        wait_for(
            lambda: not any(alive(p) for p in job_pids | tree),
            timeout=10,
            what="every job process and the launcher to die with the server",
        )
        assert all(processes_with_job_id(job.id) == [] for job in jobs)
        leftovers = {
            job.id: [d / job.id for d in cgroup_dirs_named(cgroup_parent) if (d / job.id).is_dir()]
            for job in jobs
        }
        assert all(leftovers.values()), "a killed server cannot remove its job cgroups"

    with worker_serve(tmp_path / "second", *flags) as restarted:
        # Startup cleanup runs before the server listens.
        for job in jobs:
            assert not any(d.exists() for d in leftovers[job.id]), f"{job.id} still there"
            assert any(job.id in line and "leftover" in line for line in restarted.stderr_lines), (
                f"no log line names leftover job {job.id}:\n{restarted.stderr}"
            )
        # The new server works, in the same parent.
        assert (
            wait_ended(restarted.stub(), submit(restarted.stub(), shell("true")).id).exit_code == 0
        )
        assert restarted.stop() == 0
    print(f"\nSIGKILL: {len(job_pids)} job processes (3 jobs) all dead; restart log:")
    print("".join(x for x in restarted.stderr_lines if "leftover" in x))


# --- stalled and vanishing followers ----------------------------------------------------------

#: Output of the job the followers read: large enough that a stalled reader's windows and
#: socket buffers (a few MiB) fill long before the job is done.
OUTPUT = 64 * MiB


def _timed_writer(go: Path) -> pb.JobSpec:
    """Waits for ``go``, writes OUTPUT zero bytes to stdout, then prints its write time on stderr."""
    return shell(
        f"while [ ! -e {go} ]; do sleep 0.01; done; s=$(date +%s%N); "
        f"head -c {OUTPUT} /dev/zero; e=$(date +%s%N); echo $(( (e - s) / 1000000 )) >&2"
    )


def _write_ms(server: ServerProcess, job_id: str) -> int:
    call = server.stub().Tail(
        pb.TailRequest(job_id=job_id, stream=pb.STREAM_STDERR), timeout=RPC_TIMEOUT
    )
    return int(b"".join(m.data for m in call).decode())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path / "server.toml",
        "[engine]\nstop_grace = 1.0\n\n[plugins.grpc]\nmax_streams_per_client = 256\n",
    )
    with worker_serve(tmp_path, "--config", str(config)) as server:
        yield server


@attrs.define
class _Run:
    write_ms: int  # the job's own measure of writing OUTPUT
    live_s: float  # from "go" until the last live follower had everything
    digests: list[tuple[str, int]]
    peak_rss_kib: int


def _run_job(server: ServerProcess, go: Path, *, stalled: bool, live: int) -> _Run:
    """One OUTPUT-sized job with ``live`` reading followers and, if ``stalled``, two that stop
    reading: one HTTP/2 stream never read (flow control stops the server's sends) and one TCP
    connection whose reader stops after the first bytes (the socket buffers fill)."""
    job = submit(server.stub(), _timed_writer(go))
    stalls: list[grpc.Call] = []
    relay = Relay(server.port)
    try:
        if stalled:
            stalls.append(
                server.stub("stalled-h2").Tail(pb.TailRequest(job_id=job.id), timeout=120)
            )
            stalled_tcp = server.stub("stalled-tcp", port=relay.port).Tail(
                pb.TailRequest(job_id=job.id), timeout=120
            )
            stalls.append(stalled_tcp)
        digests: list[tuple[str, int]] = []
        readers = [
            threading.Thread(
                target=lambda i=i: digests.append(
                    stdout_digest(
                        server.stub(f"reader-{i}").Tail(pb.TailRequest(job_id=job.id), timeout=120)
                    )
                )
            )
            for i in range(live)
        ]
        for reader in readers:
            reader.start()
        time.sleep(0.3)  # every follower attached before the first byte
        started = time.monotonic()
        go.touch()
        if stalled:
            assert len(next(stalled_tcp).data) > 0
            relay.stall()
        peak = server.stats().rss_kib
        probe = server.stub()
        while probe.Get(pb.GetRequest(job_id=job.id), timeout=5).job.state != pb.JOB_STATE_ENDED:
            # Other calls are served meanwhile (each Get has 5 s), and memory is sampled.
            peak = max(peak, server.stats().rss_kib)
            time.sleep(0.05)
        for reader in readers:
            reader.join(60)
        live_s = time.monotonic() - started
        return _Run(_write_ms(server, job.id), live_s, digests, peak)
    finally:
        for call in stalls:
            call.cancel()
        relay.close()


def test_stalled_followers_do_not_slow_the_job_or_others_and_memory_stays_bounded(
    server: ServerProcess, tmp_path: Path
) -> None:
    expected = [(zeros_digest(OUTPUT), OUTPUT)] * 3
    _run_job(server, tmp_path / "warm-up", stalled=False, live=1)
    alone = _run_job(server, tmp_path / "alone", stalled=False, live=0)
    before = server.stats()
    stalled_only = _run_job(server, tmp_path / "stalled", stalled=True, live=0)
    live_only = _run_job(server, tmp_path / "live", stalled=False, live=3)
    both = _run_job(server, tmp_path / "both", stalled=True, live=3)
    after = server.stats()
    print(
        f"\nwriting {OUTPUT // MiB} MiB: {alone.write_ms} ms alone, {stalled_only.write_ms} ms "
        f"with 2 stalled followers; 3 live followers done in {live_only.live_s:.2f} s, "
        f"{both.live_s:.2f} s with 2 stalled ones too; server RSS {before.rss_mib:.0f} MiB -> "
        f"peak {(stalled_only.peak_rss_kib - before.rss_kib) / 1024:+.0f} MiB with the stalled "
        f"followers, threads {before.threads} -> {after.threads}"
    )
    # Full speed: the stalled followers cost the job nothing (generous for a 2-core box).
    assert stalled_only.write_ms <= 2 * alone.write_ms + 250, (alone, stalled_only)
    # The live followers get everything, no slower with stalled ones beside them.
    assert live_only.digests == expected and both.digests == expected
    assert both.live_s <= 1.5 * live_only.live_s + 1.0, (live_only.live_s, both.live_s)
    # Bounded: the job's output is kept once (the memory broker), not per stalled follower.
    assert stalled_only.peak_rss_kib - before.rss_kib < (OUTPUT + 64 * MiB) // 1024
    assert after.threads <= before.threads + 4


_CLIENT = textwrap.dedent(
    """
    import sys, grpc
    from worker_plugins.grpc_transport import worker_pb2 as pb, worker_pb2_grpc as pb_grpc
    port, ca, cert, key, job_id = sys.argv[1:]
    creds = grpc.ssl_channel_credentials(
        open(ca, "rb").read(), open(key, "rb").read(), open(cert, "rb").read())
    channel = grpc.secure_channel("127.0.0.1:" + port, creds)
    for message in pb_grpc.WorkerStub(channel).Tail(pb.TailRequest(job_id=job_id), timeout=60):
        print(len(message.data), flush=True)
    """
)


def test_followers_vanishing_mid_stream_do_not_disturb_the_others(
    server: ServerProcess, tmp_path: Path
) -> None:
    stub = server.stub()
    warm = submit(stub, shell("echo warm"))
    wait_ended(stub, warm.id)
    before = server.stats()
    size = 40 * MiB
    # ~40 MiB over about two seconds, so every follower is mid-stream when the others vanish.
    job = submit(
        stub,
        shell(
            f"i=0; while [ $i -lt 40 ]; do head -c {MiB} /dev/zero; i=$((i+1)); sleep 0.05; done"
        ),
    )
    # A follower in another process, SIGKILLed once it has data.
    cert, key = server.identity("killed").write(tmp_path, "killed")
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLIENT,
            str(server.port),
            str(server.pki.ca_path),
            str(cert),
            str(key),
            job.id,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    # A follower whose connection is reset (RST) mid-stream.
    relay = Relay(server.port)
    reset = server.stub("reset", port=relay.port).Tail(pb.TailRequest(job_id=job.id), timeout=60)
    # A follower that cancels its call.
    cancelled = server.stub("cancelled").Tail(pb.TailRequest(job_id=job.id), timeout=60)
    results: list[tuple[str, int]] = []
    readers = [
        threading.Thread(
            target=lambda i=i: results.append(
                stdout_digest(
                    server.stub(f"stays-{i}").Tail(pb.TailRequest(job_id=job.id), timeout=60)
                )
            )
        )
        for i in range(4)
    ]
    try:
        for reader in readers:
            reader.start()
        assert client.stdout is not None and int(client.stdout.readline()) > 0
        client.kill()
        next(reset)
        relay.reset()
        with pytest.raises(grpc.RpcError):
            for _ in reset:
                pass
        next(cancelled)
        cancelled.cancel()
        for reader in readers:
            reader.join(60)
        ended = wait_ended(stub, job.id)
    finally:
        client.kill()
        client.wait(10)
        relay.close()
    assert ended.exit_code == 0 and ended.end_reason == pb.END_REASON_EXITED
    assert results == [(zeros_digest(size), size)] * 4
    # What the vanished followers held (connections, streams) is released.
    server.close_channels()
    wait_for(
        lambda: server.stats().fds <= before.fds + 2, timeout=15, what="the server's fds to settle"
    )
    after = server.stats()
    print(f"\nfds {before.fds} -> {after.fds}, threads {before.threads} -> {after.threads}")
    assert after.threads <= before.threads + 4
