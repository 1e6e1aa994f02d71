"""A real ``worker serve`` process and the probes the reliability tests and benches read.

Shared by ``tests/test_reliability_*.py`` and ``bench/bench_{load,soak,tail}.py`` (which put
``tests/`` on ``sys.path``). Everything is on 127.0.0.1, every wait is bounded, and a server
left running by a failing test is killed on the way out.

What an operator would look at is what is measured: the server's resident memory
(``VmRSS``), its open file descriptors (``/proc/<pid>/fd``) and threads (``Threads``), and
which processes exist (``/proc``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import attrs
import grpc
from grpc_certs import Identity, TestPKI, make_pki
from grpc_harness import collect, launch_serve, shell
from helpers import alive

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

#: `worker` as a subprocess, run by this interpreter (the venv's).

#: Bound on every single RPC.
RPC_TIMEOUT = 30.0

MiB = 1 << 20


# --- /proc probes ------------------------------------------------------------------------------


@attrs.frozen
class ProcStats:
    """One sample of a process's footprint."""

    rss_kib: int
    fds: int
    threads: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024


def proc_stats(pid: int) -> ProcStats:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcStats(
        rss_kib=int(fields["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields["Threads"]),
    )


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def processes_with_job_id(job_id: str) -> list[int]:
    """Processes whose environment carries ``WORKER_JOB_ID=<job_id>`` (every job's does)."""
    needle = f"WORKER_JOB_ID={job_id}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes() + b"\0"
        except OSError:
            continue
        if needle in environ and alive(int(entry)):
            found.append(int(entry))
    return found


# --- the server ---------------------------------------------------------------------------------


@attrs.define
class ServerProcess:
    """A running ``worker serve``; clients are made with :meth:`stub`."""

    process: subprocess.Popen[str]
    port: int
    pki: TestPKI
    stderr_lines: list[str]
    _channels: list[grpc.Channel] = attrs.Factory(list)
    _identities: dict[str, Identity] = attrs.Factory(dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stats(self) -> ProcStats:
        return proc_stats(self.pid)

    def identity(self, cn: str) -> Identity:
        if cn not in self._identities:
            self._identities[cn] = self.pki.client(cn)
        return self._identities[cn]

    def channel(
        self, cn: str = "alice", port: int | None = None, *, many_streams: bool = False
    ) -> grpc.Channel:
        """A new mTLS channel (its own TCP connection) as ``cn``, to the server or ``port``.

        ``many_streams``: for a process following hundreds of streams at once. gRPC's
        bandwidth probing would grow each stream's window to megabytes: the process then
        buffers far more than its threads can digest, and the server's keepalive PING waits
        behind that data until it times out. Measured, 500 followers x 20 MiB in this one
        process: with probing 120 dropped by "ping timeout", 5.9 GiB resident; without, all
        500 complete in 23 s (54 s before), 1.7 GiB.
        """
        identity = self.identity(cn)
        creds = grpc.ssl_channel_credentials(self.pki.ca.cert_pem, identity.key, identity.cert)
        options: list[tuple[str, str | int]] = [
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.max_receive_message_length", 64 * MiB),
            # Each channel its own connection, even with equal arguments.
            ("grpc.channel_id", uuid.uuid4().hex),
        ]
        if many_streams:
            options.append(("grpc.http2.bdp_probe", 0))
        channel = grpc.secure_channel(f"127.0.0.1:{port or self.port}", creds, options=options)
        self._channels.append(channel)
        return channel

    def stub(
        self, cn: str = "alice", port: int | None = None, *, many_streams: bool = False
    ) -> pb_grpc.WorkerStub:
        return pb_grpc.WorkerStub(self.channel(cn, port, many_streams=many_streams))

    def close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an operator stops it; its exit status."""
        self.close_channels()
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextlib.contextmanager
def worker_serve(
    directory: Path,
    *extra: str,
    pki: TestPKI | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """``worker serve`` on a free loopback port with a throwaway PKI (``extra`` are its flags).

    Stopped with SIGTERM on the way out if still running, SIGKILLed if that hangs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = pki or make_pki(directory / "pki")
    launched = launch_serve(pki, *extra, ready_timeout=ready_timeout)
    server = ServerProcess(launched.process, launched.port, pki, launched.stderr_lines)
    try:
        yield server
    finally:
        server.close_channels()
        if launched.process.poll() is None:
            launched.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                launched.process.wait(30)
        launched.reap()  # SIGKILL if SIGTERM did not end it


# --- jobs and output ----------------------------------------------------------------------------


def submit(stub: pb_grpc.WorkerStub, spec: pb.JobSpec) -> pb.Job:
    return stub.Submit(pb.SubmitRequest(spec=spec), timeout=RPC_TIMEOUT).job


def wait_ended(stub: pb_grpc.WorkerStub, job_id: str, timeout: float = 60.0) -> pb.Job:
    """The job's final record, read from Watch (which ends after ENDED)."""
    last = None
    for record in stub.Watch(pb.WatchRequest(job_id=job_id), timeout=timeout):
        last = record
    assert last is not None and last.state == pb.JOB_STATE_ENDED, f"job {job_id} did not end"
    return last


def stdout_digest(messages: Iterable[pb.OutputChunk]) -> tuple[str, int]:
    """sha256 and length of stdout, streamed (nothing kept but the hash)."""
    digest = hashlib.sha256()
    size = 0
    for message in messages:
        if message.stream == pb.STREAM_STDOUT:
            assert message.offset == size, "a gap or an overlap in stdout"
            digest.update(message.data)
            size += len(message.data)
    return digest.hexdigest(), size


def zeros_digest(size: int) -> str:
    digest = hashlib.sha256()
    block = b"\0" * MiB
    left = size
    while left:
        piece = block[: min(left, MiB)]
        digest.update(piece)
        left -= len(piece)
    return digest.hexdigest()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- a relay that can stall or reset a follower's TCP connection ------------------------------


class Relay:
    """A TCP relay from a local port to ``upstream``, one connection at a time per accept.

    ``stall()`` stops reading what the server sends (the server's socket buffers fill, as
    with a client that stopped reading); ``freeze()`` stops moving bytes either way but keeps
    the sockets open (a peer whose machine lost power: no FIN, no RST); ``reset()`` closes
    both sides with RST.
    """

    def __init__(self, upstream: int) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, upstream]
            self._start(self._pump, client, upstream, False)
            self._start(self._pump, upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        src.settimeout(0.1)
        while not self._closed.is_set():
            if self._frozen.is_set() or (from_server and self._stalled.is_set()):
                time.sleep(0.05)  # not reading: the kernel buffers fill, then the sender waits
                continue
            try:
                data = src.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def stall(self) -> None:
        self._stalled.set()

    def freeze(self) -> None:
        self._frozen.set()

    def reset(self) -> None:
        """Abort every relayed connection with RST (SO_LINGER 0), like a crashed peer."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def close(self) -> None:
        self._closed.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- drivers shared by the load tests and the benches ------------------------------------------


@attrs.define
class LoadResult:
    """What a run of short jobs did: counts, failures and submit→end-of-output latencies."""

    completed: int = 0
    failures: list[str] = attrs.Factory(list)
    latencies: list[float] = attrs.Factory(list)
    job_ids: list[str] = attrs.Factory(list)
    elapsed: float = 0.0

    @property
    def jobs_per_second(self) -> float:
        return self.completed / self.elapsed if self.elapsed else 0.0


#: Guards every LoadResult that run_load is filling.
result_lock = threading.Lock()


def run_load(
    server: ServerProcess,
    clients: int,
    *,
    jobs: int | None = None,
    seconds: float | None = None,
    cn_prefix: str = "load",
    result: LoadResult | None = None,
) -> LoadResult:
    """``clients`` threads, each with its own mTLS connection and CN, run short jobs until
    ``jobs`` were run in all or ``seconds`` passed. Each job echoes a unique token; its output
    is read back with Tail (which ends once the job has ended and all was read) and checked
    by sha256. The latency of a job is submit until the end of its Tail. Pass ``result`` to
    watch it fill while the run goes on (read it under ``result_lock``)."""
    assert (jobs is None) != (seconds is None), "give jobs or seconds"
    result = result if result is not None else LoadResult()
    lock = result_lock
    issued = 0
    deadline = time.monotonic() + (seconds if seconds is not None else 3600.0)

    def take() -> bool:
        nonlocal issued
        with lock:
            if (jobs is not None and issued >= jobs) or time.monotonic() >= deadline:
                return False
            issued += 1
            return True

    def client(index: int) -> None:
        stub = server.stub(f"{cn_prefix}-{index}")
        while take():
            token = uuid.uuid4().hex
            started = time.monotonic()
            try:
                job = submit(stub, pb.JobSpec(command="/bin/echo", args=[token]))
                got = collect(stub.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT))
                latency = time.monotonic() - started
                out = got.get(pb.STREAM_STDOUT, b"")
                if hashlib.sha256(out).digest() != hashlib.sha256(f"{token}\n".encode()).digest():
                    raise AssertionError(f"job {job.id}: output {out!r}, expected {token}")
            except Exception as exc:
                with lock:
                    result.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                result.completed += 1
                result.latencies.append(latency)
                result.job_ids.append(job.id)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join((seconds or 0) + 600)
    result.elapsed = time.monotonic() - started
    return result


class Sampler:
    """Samples a process's footprint every ``interval`` seconds on a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.samples: list[tuple[float, ProcStats]] = []
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic() - self._start, proc_stats(self._pid)))

    def stop(self) -> ProcStats:
        """Stop sampling; the sample with the highest RSS."""
        self._stop.set()
        self._thread.join(5)
        if not self.samples:
            return proc_stats(self._pid)
        return max((s for _, s in self.samples), key=lambda s: s.rss_kib)


@attrs.define
class FollowResult:
    digests: list[tuple[str, int]]
    expected: tuple[str, int]
    elapsed: float  # from the first byte written until the last follower had everything
    failures: list[str]

    @property
    def megabytes_per_second(self) -> float:
        total = sum(size for _, size in self.digests)
        return total / MiB / self.elapsed if self.elapsed else 0.0


def run_followers(
    server: ServerProcess,
    go: Path,
    followers: int,
    megabytes: int,
    per_connection: int = 10,
    timeout: float = 600.0,
) -> FollowResult:
    """``followers`` Tails (``per_connection`` per mTLS connection) of one job that writes
    ``megabytes`` MiB once every follower is attached; each digests stdout with sha256."""
    size = megabytes * MiB
    stub = server.stub()
    job = submit(
        stub,
        shell(
            f"echo ready >&2; while [ ! -e {go} ]; do sleep 0.01; done; head -c {size} /dev/zero"
        ),
    )
    stubs = [
        server.stub(f"follower-{i}", many_streams=True)
        for i in range((followers + per_connection - 1) // per_connection)
    ]
    attached = threading.Semaphore(0)
    digests: list[tuple[str, int]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def follow(index: int) -> None:
        try:
            call = stubs[index // per_connection].Tail(
                pb.TailRequest(job_id=job.id), timeout=timeout
            )
            first = next(call)  # "ready" on stderr: this follower is attached
            attached.release()
            result = stdout_digest(itertools.chain([first], call))
            with lock:
                digests.append(result)
        except Exception as exc:
            attached.release()
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(followers)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert attached.acquire(timeout=60), "a follower did not attach"
    started = time.monotonic()
    go.touch()
    for thread in threads:
        thread.join(max(1.0, timeout - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    wait_ended(stub, job.id)
    return FollowResult(digests, (zeros_digest(size), size), elapsed, failures)
