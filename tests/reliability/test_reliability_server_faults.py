"""Faults at the server level, against a real ``worker serve`` process over mTLS.

- The server is SIGKILLed while jobs run (one ignores SIGTERM, one daemonizes out of its
  session): no job process survives, and the next server removes the leftover cgroups and
  says so on stderr.
- A follower stops reading entirely (HTTP/2 flow control, and a TCP connection whose reader
  stalled): the job is not held back, other followers get everything, the server's memory
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
from pathlib import Path

import grpc
import pytest
from cgroup_helpers import cgroup_dirs_named
from grpc_harness import shell, wait_for
from helpers import alive, descendants, job_processes
from reliability_harness import (
    RPC_TIMEOUT,
    MiB,
    Relay,
    ServerProcess,
    run_with_stalled_followers,
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
        job_pids = {pid for job in jobs for pid in job_processes(job.id)}
        assert daemon in job_pids and len(job_pids) >= 5  # sh + sleeps, the daemon, its parent
        tree = descendants(server.pid)  # the launcher and the jobs' main processes
        assert {job.pid for job in jobs} <= tree

        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        wait_for(
            lambda: not any(alive(p) for p in job_pids | tree),
            timeout=30,
            what="every job process and the launcher to die with the server",
        )
        assert all(job_processes(job.id) == [] for job in jobs)
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


def test_stalled_followers_do_not_hold_back_the_job_or_others_and_memory_stays_bounded(
    server: ServerProcess, tmp_path: Path
) -> None:
    # How much they cost in time (the job's write, the live followers) is measured by
    # bench/bench_stalled.py; here, what must hold however busy the host is.
    expected = [(zeros_digest(OUTPUT), OUTPUT)] * 3
    run_with_stalled_followers(server, tmp_path / "warm-up", stalled=False, live=1, size=OUTPUT)
    before = server.stats()
    stalled_only = run_with_stalled_followers(
        server, tmp_path / "stalled", stalled=True, live=0, size=OUTPUT
    )
    both = run_with_stalled_followers(server, tmp_path / "both", stalled=True, live=3, size=OUTPUT)
    print(
        f"\nwriting {OUTPUT // MiB} MiB with 2 stalled followers: {stalled_only.write_ms} ms; "
        f"3 live followers beside them done in {both.live_s:.2f} s; server RSS "
        f"{before.rss_mib:.0f} MiB -> peak {(stalled_only.peak_rss_kib - before.rss_kib) / 1024:+.0f}"
        " MiB with the stalled followers"
    )
    # The job wrote everything and ended while a follower that never reads was attached: the
    # followers' pace is not the job's.
    for run in (stalled_only, both):
        assert run.ended.exit_code == 0 and run.ended.end_reason == pb.END_REASON_EXITED
        assert run.stalled_still_attached, "the server dropped the stalled follower"
    # The live followers got everything beside them.
    assert both.failures == [] and both.digests == expected
    # Bounded: the job's output is kept once (the memory store), not per stalled follower.
    assert stalled_only.peak_rss_kib - before.rss_kib < (OUTPUT + 64 * MiB) // 1024
    # The stalled calls are cancelled: what served them goes (bounded pools, no leak per call).
    wait_for(
        lambda: server.stats().threads <= before.threads + 4,
        timeout=30,
        what=f"the server's threads to come back to {before.threads} + 4",
    )


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
    # Half the output, then the rest once `go` exists (after the others vanished): every
    # follower is mid-stream when they do, however slow the host.
    go = tmp_path / "go"
    half = size // 2
    job = submit(
        stub,
        shell(
            f"head -c {half} /dev/zero; while [ ! -e {go} ]; do sleep 0.01; done; "
            f"head -c {size - half} /dev/zero"
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
        go.touch()
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
        lambda: server.stats().fds <= before.fds + 2, timeout=30, what="the server's fds to settle"
    )
    wait_for(
        lambda: server.stats().threads <= before.threads + 4,
        timeout=30,
        what="the server's threads to settle",
    )
    after = server.stats()
    print(f"\nfds {before.fds} -> {after.fds}, threads {before.threads} -> {after.threads}")
