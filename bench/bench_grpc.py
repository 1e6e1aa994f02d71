"""Benchmark: the remote API against bare gRPC over the same mTLS, in the same run.

1. submit→exit round trip vs a bare unary call, and the in-process engine's submit→exit
   (the spawn time), so the target reads ``round trip <= 3 x bare unary + spawn``. Two ways
   a client learns how its job ended: one Submit with ``wait_seconds`` (one call), and
   Submit then Watch until ENDED (two calls);
1b. the same two, confined (a second server with ``--plugins cgroups,netns``), measured
   alternately call by call so both see the same machine: one call must not cost more than
   two (target: Submit(wait) <= Submit + Watch);
2. jobs/s with 1, 4 and 16 concurrent clients (each its own mTLS connection), with the
   durable store on (serve's defaults: ``sqlite`` records and ``spool`` output in a state
   directory; checked from the server's start-up line), each job learnt either by Submit +
   Watch or by one Submit(wait); with the CPU each side used per job (server process; its
   launcher and the jobs; this process's client threads) and the clients' share of the two
   cores (target for 16 clients: at least 800 jobs/s);
3. Tail throughput of a job writing --megabytes MiB to 1 and to 50 followers vs a bare
   server streaming the same bytes in 1 MiB messages to as many clients (target for one
   follower: at least 60% of the raw stream). Two raw streams: bytes already in memory,
   and a relay of a job's pipe (the same `head` writing into the same 1 MiB pipe, read and
   sent on) -- the like-for-like baseline of a live follower -- without and with keeping
   every byte it sent (what replay costs: fresh memory for every byte).

Both servers are separate processes on 127.0.0.1 with throwaway certificates; the clients
are this process. Run as root:

    .venv/bin/python bench/bench_grpc.py [--quick] [--only trips,confined,rates,tail]

``--profile OUT.prof`` runs the main server under ``bench/profile_serve.py`` (cProfile in
every thread, stats written when it stops) and prints where its CPU went; the figures of
such a run are the profiler's, not the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds
from grpc_certs import TestPKI, make_pki
from grpc_harness import LISTENING, launch_serve
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


TICK = os.sysconf("SC_CLK_TCK")

#: Jobs per rate row (whatever the number of clients), and the rows' target.
RATE_JOBS = 2000
RATE_TARGET = 800.0

#: The two ways a client runs a job and learns how it ended.
WAYS: dict[str, Callable[[object], None]] = {
    "Submit + Watch": round_trip,
    "Submit(wait)": submit_and_wait,
}


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return found


def server_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the server process (every thread), and by its children
    (the launcher: its own time and that of the jobs it reaped)."""
    fields = _stat_fields(pid)
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = 0.0
    for child in _children(pid):
        try:
            f = _stat_fields(child)
        except OSError:
            continue  # ended meanwhile
        children += sum(int(x) for x in f[11:15]) / TICK
    return own, children


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@attrs.frozen
class Rate:
    """One rate row: jobs/s and the CPU per job of each side (ms)."""

    jobs_per_second: float
    server_ms: float
    launcher_ms: float
    client_ms: float

    @property
    def client_share(self) -> float:
        """The clients' share of the machine's CPU time while the row ran."""
        return self.client_ms * self.jobs_per_second / 1000 / (os.cpu_count() or 1)


def jobs_per_second(
    server: ServerProcess, clients: int, jobs: int, way: Callable[[object], None]
) -> Rate:
    per_client = max(5, jobs // clients)
    stubs = [server.stub("alice") for _ in range(clients)]
    for stub in stubs:
        way(stub)  # connect and warm up

    def work(stub: object) -> None:
        for _ in range(per_client):
            way(stub)

    threads = [threading.Thread(target=work, args=(stub,)) for stub in stubs]
    own, children = server_cpu(server.pid)
    mine = client_cpu()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.perf_counter() - start
    own_after, children_after = server_cpu(server.pid)
    mine_after = client_cpu()
    server.close_channels()
    done = clients * per_client
    return Rate(
        jobs_per_second=done / elapsed,
        server_ms=(own_after - own) / done * 1e3,
        launcher_ms=(children_after - children) / done * 1e3,
        client_ms=(mine_after - mine) / done * 1e3,
    )


@contextlib.contextmanager
def serving(
    directory: Path, *extra: str, pki: TestPKI, profile: Path | None = None
) -> Iterator[ServerProcess]:
    """:func:`reliability_harness.worker_serve`, optionally under ``profile_serve.py``."""
    if profile is None:
        with worker_serve(directory, *extra, pki=pki) as server:
            yield server
        return
    worker: Sequence[str] = [sys.executable, str(PROFILER), str(profile)]
    launched = launch_serve(pki, *extra, worker=worker, ready_timeout=60)
    server = ServerProcess(launched.process, launched.port, pki, launched.stderr_lines)
    try:
        yield server
    finally:
        server.close_channels()
        launched.process.terminate()  # the profile is written on the way out
        with contextlib.suppress(subprocess.TimeoutExpired):
            launched.process.wait(120)
        launched.reap()


#: The wrapper that runs ``worker serve`` under cProfile (``--profile``).
PROFILER = Path(__file__).resolve().parent / "profile_serve.py"


def check_durable(server: ServerProcess, state: Path) -> str:
    """The plugins the server runs, after checking the durable stores are among them."""
    line = next((x for x in server.stderr_lines if LISTENING.search(x)), "")
    plugins = line.split("plugins: ", 1)[-1].split(";", 1)[0]
    names = {name.strip() for name in plugins.split(",")}
    if not {"sqlite", "spool"} <= names or not (state / "jobs.sqlite3").exists():
        raise RuntimeError(f"the server runs without the durable store: {line.strip()}")
    return plugins


def alternating(fns: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, float]:
    """Median seconds of each of ``fns``, called in turn (one of each, ``runs`` times), so a
    change of load on the machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def confined_trips(directory: Path, pki: TestPKI, runs: int) -> dict[str, float]:
    """Submit(wait) and Submit + Watch against ``worker serve --plugins cgroups,netns``."""
    parent = f"worker-bench-{uuid.uuid4().hex[:8]}"
    config = write_config(directory / "confined.toml", f'[plugins.cgroups]\nparent = "{parent}"\n')
    with worker_serve(
        directory / "confined",
        "--config",
        str(config),
        "--plugins",
        "cgroups,netns",
        "--state-dir",
        str(directory / "confined-state"),
        pki=pki,
    ) as server:
        stub = server.stub("alice")
        return alternating(
            {name: (lambda way=way: way(stub)) for name, way in WAYS.items()}, runs, 10
        )


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


SECTIONS = ("trips", "confined", "rates", "tail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, 128 MiB, 10 followers")
    parser.add_argument("--megabytes", type=int, default=None)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="OUT.prof",
        help="run the main server under bench/profile_serve.py and write its profile here",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only: unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}")
    runs = 50 if args.quick else 200
    megabytes = args.megabytes or (128 if args.quick else 1024)
    many = 10 if args.quick else 50
    total = megabytes * MiB
    rate_jobs = RATE_JOBS // 4 if args.quick else RATE_JOBS

    trips: dict[str, float] = {}
    confined: dict[str, float] = {}
    rates: dict[tuple[str, int], Rate] = {}
    plugins = ""
    with tempfile.TemporaryDirectory(prefix="worker-bench-grpc-") as tmp:
        directory = Path(tmp)
        pki = make_pki(directory / "pki")
        state = directory / "state"
        config = write_config(
            directory / "server.toml",
            f"[plugins.grpc]\nmax_streams_per_client = 1000\n\n"
            f"[plugins.memory]\nmax_bytes_per_job = {2 * total}\nmax_total_bytes = {4 * total}\n",
        )
        if "confined" in only:
            confined = confined_trips(directory, pki, runs)
        bare = Bare(pki, directory)
        try:
            with serving(
                directory / "server",
                "--config",
                str(config),
                "--state-dir",
                str(state),
                pki=pki,
                profile=args.profile,
            ) as server:
                ping = bare.channel().unary_unary("/bench.Bare/Ping")
                stub = server.stub("alice")
                submit_and_wait(stub)  # the first job makes the database's file
                plugins = check_durable(server, state)
                if "trips" in only:
                    with Engine() as engine:
                        spawn = median_seconds(
                            lambda: engine.wait(engine.submit(JobSpec("/bin/true")).id, 10),
                            runs,
                            10,
                        )
                    unary = median_seconds(lambda: ping(b"", timeout=10), runs, 10)
                    trips = {
                        name: median_seconds(lambda way=way: way(stub), runs, 10)
                        for name, way in WAYS.items()
                    }
                if "rates" in only:
                    for name, way in WAYS.items():
                        for clients in (1, 4, 16):
                            rates[name, clients] = jobs_per_second(server, clients, rate_jobs, way)
                if "tail" in only:
                    live = {
                        n: tail_rate(server, n, total, directory / f"go-{n}") for n in (1, many)
                    }
                    tails = {n: rate for n, (rate, _) in live.items()}
                    replay = replay_rate(server, live[1][1], total)
                    raws = {n: bare_rate(bare, n, total) for n in (1, many)}
                    relay = bare_rate(bare, 1, total, "Relay")
                    relay_keeping = bare_rate(bare, 1, total, "RelayKeeping")
        finally:
            bare.close()

    print(f"worker serve, plugins: {plugins}; state dir: a fresh one (durable store on)")
    if args.profile is not None:
        from profile_serve import top

        print(f"profiled (figures below are the profiler's): {args.profile}")
        print(top(str(args.profile), 25))
    if trips:
        budget = 3 * unary + spawn
        print(f"submit→exit over mTLS, medians of {runs}")
        print(f"  bare unary call           {unary * 1e3:8.2f} ms")
        print(f"  engine in-process (spawn) {spawn * 1e3:8.2f} ms")
        print(f"  target <= 3 x unary + spawn = {budget * 1e3:.2f} ms")
        for label, trip in trips.items():
            verdict = "PASS" if trip <= budget else "MISS"
            print(f"  {label:25s} {trip * 1e3:8.2f} ms  {verdict} ({trip / budget:.2f} of it)")
    if confined:
        one, two = confined["Submit(wait)"], confined["Submit + Watch"]
        verdict = "PASS" if one <= two else "MISS"
        print(f"confined (--plugins cgroups,netns) submit→exit, alternating, medians of {runs}")
        print(f"  Submit(wait)              {one * 1e3:8.2f} ms")
        print(f"  Submit + Watch            {two * 1e3:8.2f} ms")
        print(f"  one call / two calls      {one / two:8.2f}    target <= 1.00: {verdict}")
    if rates:
        print(f"jobs/s over mTLS, {rate_jobs} jobs of /bin/true per row, durable store on")
        print(
            f"  {'way':16s} {'clients':>7s} {'jobs/s':>8s}   CPU per job (ms): server  launcher+jobs"
            "  clients (their share of the cores)"
        )
        for (name, clients), rate in rates.items():
            verdict = ""
            if clients == 16:
                passed = rate.jobs_per_second >= RATE_TARGET
                verdict = f"  target >= {RATE_TARGET:.0f}: {'PASS' if passed else 'MISS'}"
            print(
                f"  {name:16s} {clients:7d} {rate.jobs_per_second:8.1f}   {rate.server_ms:24.2f}"
                f"  {rate.launcher_ms:13.2f}  {rate.client_ms:7.2f} ({rate.client_share:.0%}){verdict}"
            )
        print("  (the clients are threads of this process, on the same two cores as the server)")
    if "tail" not in only:
        return
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
