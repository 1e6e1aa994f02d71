"""Benchmark: the HTTPS transport against a bare aiohttp server over the same mTLS, same run.

1. submit→exit of ``/bin/true`` with one ``POST /v1/jobs`` (``waitSeconds``: answered once
   the job has ended) from a kept-alive aiohttp client, against a bare aiohttp hello-world
   round trip from the same client, and the in-process engine's submit→exit (the spawn
   time): the target reads ``round trip <= 3 x hello + spawn``. ``GET /v1/me`` (the guard,
   no engine) and gRPC's ``Submit`` on the same server are shown beside it, and the floor
   of any aiohttp transport over this engine: the bare server's own route that runs the
   same submit→exit in a thread of its loop's default pool (``run_in_executor``), with the
   same stores, and answers ``ok``. The samples are
   taken in rotation, a block of each measurement in turn (``--sequential``: each one's
   samples all at once, one after the other), so a change in the machine's load during the
   run (a shared host) weighs on every figure alike rather than on whichever ran then;
2. a job's output of --megabytes MiB (1 GiB by default) through ``curl`` to /dev/null,
   replayed from the spool files once the job has ended, against the same number of bytes
   from a static file served by the bare aiohttp server (``web.FileResponse``): target at
   least 0.7 of it. Raw bytes and Server-Sent Events (base64 in JSON) both shown, a live
   follower (curl attached before the job writes), the bare server streaming the bytes from
   memory in 1 MiB writes (the most aiohttp does: aiohttp's static files over TLS go through
   asyncio's sendfile fallback, a thread-pool read per 256 KiB), and the server's peak
   resident memory (nothing is gathered: the output goes out a piece at a time).

Both servers are separate processes on 127.0.0.1 with throwaway certificates and TLS 1.3;
the clients are this process and curl. The bare server tunes its allocator as ``worker
serve`` does (large buffers kept for reuse), so neither pays page faults the other does not.
Run as root:

    .venv/bin/python bench/bench_https.py [--quick] [--round-trips-only] [--sequential]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "https"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpc_certs import TestPKI
from helpers import proc_status
from https_harness import HttpsServer, https_serve

from worker_core import Config, Engine, JobSpec
from worker_plugins.grpc_transport import worker_pb2 as pb

MiB = 1 << 20

BARE_SERVER = """
import ssl, sys
from aiohttp import web
from worker_core import Config, Engine, JobSpec
from worker_core.plugin import tune_allocator_for_streaming

# The same allocator setting as worker serve (see bench/README.md): a fair baseline.
tune_allocator_for_streaming()

ca, cert, key, static, plugins, state_dir = sys.argv[1:7]
settings = {"engine": {"state_dir": state_dir}} if state_dir else {}
engine = Engine([name for name in plugins.split(",") if name], Config.from_mapping(settings))
engine.start()

async def hello(request):
    return web.Response(text="hello")

def run_true():
    engine.wait(engine.submit(JobSpec("/bin/true")).id, 10)

async def spawn(request):
    # The least an aiohttp route over this engine can do: the submit and its wait in a
    # thread (they block), then a short answer.
    await asyncio.get_running_loop().run_in_executor(None, run_true)
    return web.Response(text="ok")

async def static_file(request):
    return web.FileResponse(static)

PIECE = bytes(1 << 20)

async def memory(request):
    # The most aiohttp can do: bytes already in memory, written in 1 MiB pieces.
    left = int(request.query["bytes"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    while left > 0:
        piece = PIECE if left >= len(PIECE) else PIECE[:left]
        await response.write(piece)
        left -= len(piece)
    await response.write_eof()
    return response

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.minimum_version = ssl.TLSVersion.TLSv1_3
context.verify_mode = ssl.CERT_REQUIRED
context.load_cert_chain(cert, key)
context.load_verify_locations(cafile=ca)
app = web.Application()
app.router.add_get("/hello", hello)
app.router.add_post("/spawn", spawn)
app.router.add_get("/file", static_file)
app.router.add_get("/memory", memory)

async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

import asyncio, signal
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the engine stops its launchers
try:
    asyncio.run(main())
finally:
    engine.close()
"""


class Bare:
    """The bare aiohttp server: a hello-world route, one static file, bytes from memory, and
    the engine's submit→exit in a thread (an engine with ``plugins``, state in ``state_dir``)."""

    def __init__(
        self,
        pki: TestPKI,
        directory: Path,
        static: Path,
        plugins: list[str] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BARE_SERVER,
                str(pki.ca_path),
                str(pki.server_cert_path),
                str(pki.server_key_path),
                str(static),
                ",".join(plugins or []),
                str(state_dir or ""),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def client_context(server: HttpsServer, cn: str = "alice") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.pki.ca_path))
    cert, key = server.cert(cn)
    context.load_cert_chain(cert, key)
    return context


async def amedian(fn: Callable[[], Awaitable[object]], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


#: Samples of one measurement in a row, in rotation with the others (see the module's doc).
ROTATION_BLOCK = 25


async def round_trips(
    server: HttpsServer, bare: Bare, engine: Engine, runs: int, sequential: bool
) -> dict[str, float]:
    """Medians of ``runs`` samples of each part-1 measurement, in seconds."""
    connector = aiohttp.TCPConnector(ssl=client_context(server), limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def hello() -> None:
            async with session.get(bare.url("/hello")) as response:
                assert await response.text() == "hello"

        async def bare_spawn() -> None:
            async with session.post(bare.url("/spawn")) as response:
                assert await response.text() == "ok"

        async def me() -> None:
            async with session.get(server.url("/v1/me")) as response:
                assert response.status == 200
                await response.read()

        body = {"spec": {"command": "/bin/true"}, "waitSeconds": 20}
        headers = {"X-Worker-Client": "bench"}

        async def submit() -> None:
            async with session.post(server.url("/v1/jobs"), json=body, headers=headers) as r:
                job = (await r.json())["job"]
                if r.status != 201 or job["state"] != "JOB_STATE_ENDED":
                    raise RuntimeError(f"the submit did not answer with the ended job: {job}")

        stub = server.stub("alice")
        request = pb.SubmitRequest(spec=pb.JobSpec(command="/bin/true"), wait_seconds=20)

        async def grpc_submit() -> None:  # blocking: nothing else runs on this loop meanwhile
            stub.Submit(request, timeout=30)

        async def spawn() -> None:
            engine.wait(engine.submit(JobSpec("/bin/true")).id, 10)

        measures = {"hello": hello, "me": me, "submit": submit, "grpc": grpc_submit}
        measures["spawn"] = spawn
        measures["bare_spawn"] = bare_spawn
        if sequential:
            return {name: await amedian(fn, runs, 10) for name, fn in measures.items()}
        return await rotated_medians(measures, runs)


async def rotated_medians(
    measures: dict[str, Callable[[], Awaitable[object]]], runs: int
) -> dict[str, float]:
    """``runs`` samples of each measure, a block of each in turn; their medians."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for fn in measures.values():
        for _ in range(10):
            await fn()
    while any(len(taken) < runs for taken in samples.values()):
        for name, fn in measures.items():
            taken = samples[name]
            # The first calls after another measurement's block warm this one's path again.
            for _ in range(2):
                await fn()
            for _ in range(min(ROTATION_BLOCK, runs - len(taken))):
                start = time.perf_counter()
                await fn()
                taken.append(time.perf_counter() - start)
            await asyncio.sleep(0.01)  # what the last job left to do is done before the next
    return {name: statistics.median(taken) for name, taken in samples.items()}


def curl_rate(server: HttpsServer, url: str, total: int, *headers: str) -> float:
    """MiB/s of one curl download of ``url`` to /dev/null, checking it got ``total`` bytes."""
    argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    argv += [*server.tls_args("alice"), *(a for h in headers for a in ("-H", h)), url]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=1800)
    size, seconds = done.stdout.split()
    if int(size) < total:
        raise RuntimeError(f"curl got {size} bytes of {url}, not {total}")
    return int(size) / MiB / float(seconds)


def live_rate(server: HttpsServer, total: int, go: Path) -> float:
    """curl following a job from before its first byte until it has ended."""
    script = f"while [ ! -e {go} ]; do sleep 0.01; done; exec head -c {total} /dev/zero"
    job = server.submit("alice", {"command": "/bin/sh", "args": ["-c", script]})
    url = server.url(f"/v1/jobs/{job['id']}/output?stream=stdout&follow=true")
    argv = ["curl", "-sS", "--fail", "-N", "-o", "/dev/null", "-w", "%{size_download}"]
    argv += [*server.tls_args("alice"), url]
    curl = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # curl has connected and the follower is attached
    start = time.perf_counter()
    go.touch()
    out, _ = curl.communicate(timeout=1800)
    elapsed = time.perf_counter() - start
    if int(out) != total:
        raise RuntimeError(f"the live follower got {out} bytes, not {total}")
    return total / MiB / elapsed


def peak_rss_mib(pid: int) -> float:
    status = proc_status(pid)
    assert status is not None, "the server is gone"
    return int(status["VmHWM"].split()[0]) / 1024


def spawn_engine(plugins: list[str], state_dir: Path | None) -> Engine:
    """The in-process engine whose submit→exit of /bin/true is the spawn time."""
    config = Config.from_mapping({"engine": {"state_dir": str(state_dir)}} if state_dir else {})
    return Engine(plugins, config)


def measure_round_trips(
    directory: Path, static: Path, runs: int, sequential: bool
) -> dict[str, dict[str, float]]:
    """Part 1 for each store setup: hello, /v1/me, submit over HTTPS and gRPC, spawn."""
    https = {"max_streams_per_client": 1000}
    trips: dict[str, dict[str, float]] = {}
    # The round trip against the spawn time of an engine with the same stores: the
    # server's own (sqlite records, spool output: a submit waits for its commit) and
    # memory ones (serve --plugins no:sqlite,no:spool against the library's default).
    setups = {
        "memory stores": ("https,no:sqlite,no:spool", [], None),
        "sqlite + spool (serve's default)": ("https", ["sqlite", "spool"], directory / "s"),
    }
    for label, (plugins, engine_plugins, state_dir) in setups.items():
        folder = directory / label.split()[0]
        with (
            https_serve(folder, https=https, plugins=plugins, policy=None) as server,
            spawn_engine(engine_plugins, state_dir) as engine,
        ):
            bare_state = directory / "bare" if state_dir else None
            bare = Bare(server.pki, directory, static, engine_plugins, bare_state)
            try:
                trips[label] = asyncio.run(round_trips(server, bare, engine, runs, sequential))
            finally:
                bare.close()
    return trips


def measure_output(directory: Path, static: Path, total: int) -> dict[str, float]:
    """Part 2: MiB/s of the job's output and of the bare server's, and the peak RSS."""
    https = {"max_streams_per_client": 1000}
    with static.open("wb") as f:
        block = b"\0" * MiB
        for _ in range(total // MiB):
            f.write(block)
    with https_serve(directory / "output", https=https, plugins="https", policy=None) as server:
        bare = Bare(server.pki, directory, static)
        try:
            job = server.submit(
                "alice",
                {"command": "head", "args": ["-c", str(total), "/dev/zero"]},
                waitSeconds=600,
            )
            assert job["exitCode"] == 0, job
            output = server.url(f"/v1/jobs/{job['id']}/output?stream=stdout")
            rates = {"static": curl_rate(server, bare.url("/file"), total)}
            rates["raw"] = curl_rate(server, output, total)
            rates["events"] = curl_rate(server, output, total, "Accept: text/event-stream")
            rates["static_again"] = curl_rate(server, bare.url("/file"), total)
            rates["live"] = live_rate(server, total, directory / "go")
            rates["memory"] = curl_rate(server, bare.url(f"/memory?bytes={total}"), total)
            rates["peak_mib"] = peak_rss_mib(server.launched.process.pid)
        finally:
            bare.close()
    return rates


def print_round_trips(trips: dict[str, dict[str, float]], runs: int, sequential: bool) -> None:
    print(
        f"submit→exit over HTTPS (TLS 1.3, mTLS, kept-alive aiohttp client), medians of {runs}"
        f" ({'sequential' if sequential else f'in rotation, blocks of {ROTATION_BLOCK}'})"
    )
    for label, t in trips.items():
        budget = 3 * t["hello"] + t["spawn"]
        verdict = "PASS" if t["submit"] <= budget else "MISS"
        print(f"  {label}")
        print(f"    bare aiohttp hello        {t['hello'] * 1e3:8.2f} ms")
        print(f"    in-process spawn          {t['spawn'] * 1e3:8.2f} ms  (same stores)")
        print(f"    GET /v1/me (guard only)   {t['me'] * 1e3:8.2f} ms")
        print(f"    target <= 3 x hello + spawn = {budget * 1e3:.2f} ms")
        print(
            f"    POST /v1/jobs (wait)      {t['submit'] * 1e3:8.2f} ms  {verdict} "
            f"({t['submit'] / budget:.2f} of it)"
        )
        print(f"    gRPC Submit(wait_seconds) {t['grpc'] * 1e3:8.2f} ms  (same server)")
        print(
            f"    bare aiohttp + engine in a thread {t['bare_spawn'] * 1e3:6.2f} ms  "
            f"({t['bare_spawn'] / budget:.2f} of the target: the floor of an aiohttp route)"
        )


def print_output(rates: dict[str, float], megabytes: int) -> None:
    raw, events, live, memory = rates["raw"], rates["events"], rates["live"], rates["memory"]
    baseline = min(rates["static"], rates["static_again"])
    print(
        f"output of {megabytes} MiB through curl, MiB/s (static file: {rates['static']:.0f}, "
        f"{rates['static_again']:.0f} again; the lower is the baseline)"
    )
    ratio = raw / baseline
    verdict = "PASS" if ratio >= 0.7 else "MISS"
    print(
        f"  raw replay     {raw:8.1f}  static {baseline:8.1f}  {ratio:.2f}  target >= 0.70: {verdict}"
    )
    print(f"  SSE replay     {events:8.1f}  (base64 in JSON events; {events / baseline:.2f})")
    print(
        f"  raw live       {live:8.1f}  (curl attached before the job wrote; {live / baseline:.2f})"
    )
    print(
        f"  bare aiohttp streaming from memory in 1 MiB writes: {memory:.1f} "
        f"(raw replay {raw / memory:.2f} of it)"
    )
    print(f"  worker serve's peak resident memory (VmHWM): {rates['peak_mib']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, 256 MiB")
    parser.add_argument("--megabytes", type=int, default=None)
    parser.add_argument(
        "--round-trips-only", action="store_true", help="measure part 1 only (no output)"
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="part 1: each measurement's samples at once, one after the other (not rotated)",
    )
    args = parser.parse_args()
    runs = 50 if args.quick else 200
    megabytes = args.megabytes or (256 if args.quick else 1024)

    with tempfile.TemporaryDirectory(prefix="worker-bench-https-") as tmp:
        directory = Path(tmp)
        static = directory / "static.bin"
        trips = measure_round_trips(directory, static, runs, args.sequential)
        rates = (
            None if args.round_trips_only else measure_output(directory, static, megabytes * MiB)
        )

    print_round_trips(trips, runs, args.sequential)
    if rates is not None:
        print_output(rates, megabytes)


if __name__ == "__main__":
    main()
