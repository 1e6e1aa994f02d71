"""Benchmark: the remote API against bare gRPC over the same mTLS, in the same run.

1. submit→exit round trip vs a bare unary call, and the in-process engine's submit→exit
   (the spawn time), so the target reads ``round trip <= 3 x bare unary + spawn``. Two ways
   a client learns how its job ended: one Submit with ``wait_seconds`` (one call), and
   Submit then Watch until ENDED (two calls);
2. jobs/s with concurrent clients (each its own mTLS connection);
3. Tail throughput of a job writing --megabytes MiB to 1 and to 50 followers vs a bare
   server streaming the same bytes in 1 MiB messages to as many clients (target for one
   follower: at least 60% of the raw stream). Two raw streams: bytes already in memory,
   and a relay of a job's pipe (the same `head` writing into the same 1 MiB pipe, read and
   sent on) -- the like-for-like baseline of a live follower -- without and with keeping
   every byte it sent (what replay costs: fresh memory for every byte).

Both servers are separate processes on 127.0.0.1 with throwaway certificates; the clients
are this process. Run as root:

    .venv/bin/python bench/bench_grpc.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds
from grpc_certs import TestPKI, make_pki
from reliability_harness import ServerProcess, worker_serve, write_config

from worker_core import Engine, JobSpec
from worker_plugins.grpc_transport import worker_pb2 as pb

MiB = 1 << 20

BARE_SERVER = """
import asyncio, fcntl, os, sys
import grpc
from grpc import aio

ca, cert, key = (open(p, "rb").read() for p in sys.argv[1:4])
PAYLOAD = b"x" * (1 << 20)

async def ping(request, context):
    return b""

async def stream(request, context):
    left = int(request)
    while left > 0:
        n = min(len(PAYLOAD), left)
        yield PAYLOAD[:n]
        left -= n

async def relay(request, context, keep=False):
    # A job's output passed on as it comes: head writes into a 1 MiB pipe (as the engine
    # gives its jobs), read here in up to 1 MiB pieces and sent; kept until the end if asked
    # (as a server that can replay must).
    kept = []
    r, w = os.pipe()
    fcntl.fcntl(r, 1031, 1 << 20)
    job = await asyncio.create_subprocess_exec("head", "-c", request.decode(), "/dev/zero", stdout=w)
    os.close(w)
    reader = asyncio.StreamReader(limit=1 << 22)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", 0))
    try:
        while data := await reader.read(1 << 20):
            if keep:
                kept.append(data)
            yield data
    finally:
        transport.close()
        await job.wait()

async def relay_keeping(request, context):
    async for data in relay(request, context, keep=True):
        yield data

async def main():
    server = aio.server(options=[("grpc.max_send_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", {
        "Ping": grpc.unary_unary_rpc_method_handler(ping),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Relay": grpc.unary_stream_rpc_method_handler(relay),
        "RelayKeeping": grpc.unary_stream_rpc_method_handler(relay_keeping),
    }),))
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


class Bare:
    """The bare gRPC server: one unary method and one stream of N bytes, nothing else."""

    def __init__(self, pki: TestPKI, directory: Path) -> None:
        ca = directory / "bare-ca.pem"
        ca.write_bytes(pki.ca.cert_pem)
        cert, key = pki.server.write(directory, "bare-server")
        self.pki = pki
        self.process = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(ca), str(cert), str(key)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def channel(self) -> grpc.Channel:
        identity = self.pki.client("alice")
        creds = grpc.ssl_channel_credentials(self.pki.ca.cert_pem, identity.key, identity.cert)
        return grpc.secure_channel(
            f"127.0.0.1:{self.port}", creds, options=[("grpc.max_receive_message_length", 8 << 20)]
        )

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


TRUE = pb.JobSpec(command="/bin/true")


def submit_and_wait(stub: object) -> None:
    """One call: Submit with wait_seconds answers with the ended job."""
    request = pb.SubmitRequest(spec=TRUE, wait_seconds=20)
    job = stub.Submit(request, timeout=30).job  # type: ignore[attr-defined]
    if job.state != pb.JOB_STATE_ENDED:
        raise RuntimeError("Submit answered before the job ended")


def round_trip(stub: object) -> None:
    """Two calls: Submit, then Watch until ENDED."""
    job = stub.Submit(pb.SubmitRequest(spec=TRUE), timeout=30).job  # type: ignore[attr-defined]
    for record in stub.Watch(pb.WatchRequest(job_id=job.id), timeout=30):  # type: ignore[attr-defined]
        if record.state == pb.JOB_STATE_ENDED:
            return
    raise RuntimeError("the watch ended before the job")


def jobs_per_second(server: ServerProcess, clients: int, per_client: int) -> float:
    stubs = [server.stub("alice") for _ in range(clients)]
    for stub in stubs:
        round_trip(stub)  # connect and warm up

    def work(stub: object) -> None:
        for _ in range(per_client):
            round_trip(stub)

    threads = [threading.Thread(target=work, args=(stub,)) for stub in stubs]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return clients * per_client / (time.perf_counter() - start)


def concurrently(readers: list[Callable[[], int]], expected: int) -> float:
    """Run every reader at once; MiB/s of all bytes received, checking each got ``expected``."""
    received = [0] * len(readers)

    def run(i: int) -> None:
        received[i] = readers[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(readers))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(1800)
    elapsed = time.perf_counter() - start
    if any(r != expected for r in received):
        raise RuntimeError(f"a reader got {min(received)} bytes, not {expected}")
    return sum(received) / MiB / elapsed


def tail_rate(server: ServerProcess, followers: int, total: int, go: Path) -> tuple[float, str]:
    script = f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
    script += f"os.execvp('head', ['head', '-c', '{total}', '/dev/zero'])\n"
    stub = server.stub("alice")
    job = stub.Submit(
        pb.SubmitRequest(spec=pb.JobSpec(command=sys.executable, args=["-c", script])), timeout=30
    ).job
    streams = [server.stub("alice").Tail(pb.TailRequest(job_id=job.id)) for _ in range(followers)]

    def reader(stream: object) -> Callable[[], int]:
        return lambda: sum(len(chunk.data) for chunk in stream)  # type: ignore[attr-defined]

    readers = [reader(s) for s in streams]
    go.touch()  # every Tail is open: let the job write
    rate = concurrently(readers, total)
    go.unlink()
    return rate, job.id


def replay_rate(server: ServerProcess, job_id: str, total: int) -> float:
    """One follower reading a finished job's output from the start (no job writing meanwhile)."""
    stream = server.stub("alice").Tail(pb.TailRequest(job_id=job_id))
    return concurrently([lambda: sum(len(chunk.data) for chunk in stream)], total)


def bare_rate(bare: Bare, clients: int, total: int, method: str = "Stream") -> float:
    channels = [bare.channel() for _ in range(clients)]

    def reader(channel: grpc.Channel) -> Callable[[], int]:
        call = channel.unary_stream(f"/bench.Bare/{method}")
        return lambda: sum(len(m) for m in call(str(total).encode()))

    try:
        return concurrently([reader(c) for c in channels], total)
    finally:
        for channel in channels:
            channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, 128 MiB, 10 followers")
    parser.add_argument("--megabytes", type=int, default=None)
    args = parser.parse_args()
    runs = 50 if args.quick else 200
    megabytes = args.megabytes or (128 if args.quick else 1024)
    many = 10 if args.quick else 50
    total = megabytes * MiB

    with tempfile.TemporaryDirectory(prefix="worker-bench-grpc-") as tmp:
        directory = Path(tmp)
        pki = make_pki(directory / "pki")
        config = write_config(
            directory / "server.toml",
            f"[plugins.grpc]\nmax_streams_per_client = 1000\n\n"
            f"[plugins.memory]\nmax_bytes_per_job = {2 * total}\nmax_total_bytes = {4 * total}\n",
        )
        bare = Bare(pki, directory)
        try:
            with worker_serve(directory, "--config", str(config), pki=pki) as server:
                ping = bare.channel().unary_unary("/bench.Bare/Ping")
                stub = server.stub("alice")
                with Engine() as engine:
                    spawn = median_seconds(
                        lambda: engine.wait(engine.submit(JobSpec("/bin/true")).id, 10), runs, 10
                    )
                unary = median_seconds(lambda: ping(b"", timeout=10), runs, 10)
                trips = {
                    "Submit(wait_seconds)": median_seconds(lambda: submit_and_wait(stub), runs, 10),
                    "Submit + Watch": median_seconds(lambda: round_trip(stub), runs, 10),
                }
                rates = {c: jobs_per_second(server, c, max(5, runs // c)) for c in (1, 4, 16)}
                live = {n: tail_rate(server, n, total, directory / f"go-{n}") for n in (1, many)}
                tails = {n: rate for n, (rate, _) in live.items()}
                replay = replay_rate(server, live[1][1], total)
                raws = {n: bare_rate(bare, n, total) for n in (1, many)}
                relay = bare_rate(bare, 1, total, "Relay")
                relay_keeping = bare_rate(bare, 1, total, "RelayKeeping")
        finally:
            bare.close()

    budget = 3 * unary + spawn
    print(f"submit→exit over mTLS, medians of {runs}")
    print(f"  bare unary call           {unary * 1e3:8.2f} ms")
    print(f"  engine in-process (spawn) {spawn * 1e3:8.2f} ms")
    print(f"  target <= 3 x unary + spawn = {budget * 1e3:.2f} ms")
    for label, trip in trips.items():
        verdict = "PASS" if trip <= budget else "MISS"
        print(f"  {label:25s} {trip * 1e3:8.2f} ms  {verdict} ({trip / budget:.2f} of it)")
    print("jobs/s over mTLS (Submit + Watch per job)")
    for clients, rate in rates.items():
        print(f"  {clients:3d} clients             {rate:8.1f} jobs/s")
    print(f"Tail of {megabytes} MiB, MiB/s received in all")

    def row(label: str, rate: float, raw_label: str, raw: float, target: bool) -> None:
        ratio = rate / raw
        verdict = (" target >= 0.60: " + ("PASS" if ratio >= 0.6 else "MISS")) if target else ""
        print(f"  {label:22s} worker {rate:7.1f}  {raw_label:9s} {raw:7.1f}  {ratio:.2f}{verdict}")

    row("1 follower, replay", replay, "raw", raws[1], target=True)
    row("1 follower, live", tails[1], "relay", relay, target=True)
    row("1 follower, live", tails[1], "relay+keep", relay_keeping, target=False)
    row("1 follower, live", tails[1], "raw", raws[1], target=False)
    row(f"{many} followers, live", tails[many], "raw", raws[many], target=False)
    print("  (raw: bytes already in memory, no job. relay: a job's pipe passed on, nothing kept;")
    print("   relay+keep: the same, keeping every byte until the end as replay needs; measured")
    print("   after the worker's jobs, so on a VM it pays for fresh memory second: see README.)")
    print("  A live follower shares the 2 cores with the writing job, the engine's pipe reads")
    print("  and keeping every byte for replay.")


if __name__ == "__main__":
    main()
