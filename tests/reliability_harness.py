"""A real ``worker serve`` process and the probes the reliability tests and benches read.

Shared by ``tests/reliability/``, some ``tests/grpc/`` tests and the benches in ``bench/`` (which
put ``tests/`` on ``sys.path``). Everything is on 127.0.0.1, every wait is bounded, and a server
left running by a failing test is killed on the way out.

What an operator would look at is what is measured: the server's resident memory
(``VmRSS``), its open file descriptors (``/proc/<pid>/fd``) and threads (``Threads``); which
processes exist is read with the /proc reader in ``helpers``.
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
from helpers import proc_status

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

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
    status = proc_status(pid)
    if status is None:
        raise ProcessLookupError(pid)
    return ProcStats(
        rss_kib=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
    )


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


@attrs.define
class StalledRun:
    """What one job did with followers that stopped reading beside it."""

    ended: pb.Job  # its final record
    write_ms: int  # the job's own measure of writing its output
    live_s: float  # from the first byte until the last live follower had everything
    digests: list[tuple[str, int]]  # what each live follower got
    failures: list[str]  # live followers that failed
    #: The follower that never reads was still attached when the job had ended.
    stalled_still_attached: bool
    peak_rss_kib: int  # the server's, sampled while the job ran


def run_with_stalled_followers(
    server: ServerProcess,
    go: Path,
    *,
    stalled: bool,
    live: int,
    size: int = 64 * MiB,
    timeout: float = 120.0,
) -> StalledRun:
    """One job writing ``size`` zero bytes once every follower is attached, with ``live``
    reading followers and, if ``stalled``, two that stop reading after their first message:
    one HTTP/2 stream never read again (flow control stops the server's sends) and one TCP
    connection whose reader stops (the socket buffers fill). Fails if the job has not ended
    within ``timeout`` seconds; the server is sampled (and must answer Get) meanwhile."""
    stub = server.stub()
    job = submit(
        stub,
        shell(
            f"echo ready >&2; while [ ! -e {go} ]; do sleep 0.01; done; s=$(date +%s%N); "
            f"head -c {size} /dev/zero; e=$(date +%s%N); echo $(( (e - s) / 1000000 )) >&2"
        ),
    )
    request = pb.TailRequest(job_id=job.id)
    stalls: list[grpc.Call] = []
    relay = Relay(server.port)
    try:
        if stalled:
            never_read = server.stub("stalled-h2").Tail(request, timeout=timeout)
            stalled_tcp = server.stub("stalled-tcp", port=relay.port).Tail(request, timeout=timeout)
            stalls = [never_read, stalled_tcp]
            for call in (never_read, stalled_tcp):
                next(call)  # "ready" on stderr: attached, and never read again
            relay.stall()
        attached = threading.Semaphore(0)
        digests: list[tuple[str, int]] = []
        failures: list[str] = []
        lock = threading.Lock()

        def follow(index: int) -> None:
            try:
                call = server.stub(f"reader-{index}").Tail(request, timeout=timeout)
                first = next(call)  # "ready": this follower is attached
                attached.release()
                result = stdout_digest(itertools.chain([first], call))
                with lock:
                    digests.append(result)
            except Exception as exc:
                attached.release()
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")

        readers = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(live)]
        for reader in readers:
            reader.start()
        for _ in readers:
            assert attached.acquire(timeout=60), "a follower did not attach"
        started = time.monotonic()
        go.touch()
        peak = server.stats().rss_kib
        probe = server.stub()
        deadline = started + timeout
        while (
            record := probe.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
        ).state != pb.JOB_STATE_ENDED:
            assert time.monotonic() < deadline, f"the job did not end within {timeout:.0f} s"
            peak = max(peak, server.stats().rss_kib)
            time.sleep(0.05)
        still_attached = bool(stalls) and stalls[0].is_active()
        for reader in readers:
            reader.join(max(1.0, deadline - time.monotonic()))
        live_s = time.monotonic() - started
        assert not any(reader.is_alive() for reader in readers), "a live follower did not end"
        stderr = stub.Tail(
            pb.TailRequest(job_id=job.id, stream=pb.STREAM_STDERR), timeout=RPC_TIMEOUT
        )
        write_ms = int(b"".join(m.data for m in stderr).split()[-1])
        return StalledRun(record, write_ms, live_s, digests, failures, still_attached, peak)
    finally:
        for call in stalls:
            call.cancel()
        relay.close()


# --- durable state: crashes, the job database, big outputs, small disks ------------------------
# (imports are local: this section was added below the shared ones.)


def sigkill(server: ServerProcess, timeout: float = 10.0) -> set[int]:
    """SIGKILL ``server``, as a crash would end it; the pids of its descendants just before
    (the launcher and the jobs' main processes), for a check that they die with it."""
    from helpers import descendants

    tree = descendants(server.pid)
    server.process.kill()
    server.process.wait(timeout)
    server.close_channels()
    return tree


def job_processes_by_id() -> dict[str, list[int]]:
    """Every live job process on the host by its ``WORKER_JOB_ID`` (one pass over /proc)."""
    from helpers import alive, pids, proc_environ

    prefix = b"WORKER_JOB_ID="
    found: dict[str, list[int]] = {}
    for pid in pids():
        for entry in proc_environ(pid) or []:
            if entry.startswith(prefix) and alive(pid):
                found.setdefault(entry[len(prefix) :].decode(errors="replace"), []).append(pid)
    return found


def integrity_check(database: Path) -> list[str]:
    """``PRAGMA integrity_check`` of a copy of the job database and its WAL, as the next
    server will read them: the files themselves are not touched (the rows; ``["ok"]``)."""
    import shutil
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="worker-db-copy-") as tmp:
        copy = Path(tmp) / database.name
        for suffix in ("", "-wal"):  # not -shm: it is rebuilt from the WAL
            source = database.with_name(database.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        conn = sqlite3.connect(copy, timeout=10)
        try:
            return [row[0] for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()


def list_all(stub: pb_grpc.WorkerStub, request: pb.ListRequest | None = None) -> list[pb.Job]:
    """Every job ``request`` matches, page after page (newest first)."""
    request = request or pb.ListRequest()
    jobs: list[pb.Job] = []
    token = ""
    for _ in range(100_000):  # a bound: a server that always returns a token fails the test
        page = pb.ListRequest()
        page.CopyFrom(request)
        page.page_size, page.page_token = 1000, token
        response = stub.List(page, timeout=RPC_TIMEOUT)
        jobs.extend(response.jobs)
        token = response.next_page_token
        if not token:
            return jobs
    raise AssertionError("List never reached its last page")


def replay(stub: pb_grpc.WorkerStub, job_id: str) -> list[tuple[int, int, bytes]]:
    """A finished job's output as the server replays it: ``(stream, offset, data)`` per
    message, in order (both streams)."""
    return [
        (m.stream, m.offset, m.data)
        for m in stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)
    ]


def client_env(server: ServerProcess, directory: Path, cn: str = "alice") -> dict[str, str]:
    """The environment of a ``worker job`` process talking to ``server`` as ``cn``."""
    cert, key = server.identity(cn).write(directory, f"cli-{cn}")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    environ.update(
        WORKER_SERVER=server.target,
        WORKER_CA=str(server.pki.ca_path),
        WORKER_CERT=str(cert),
        WORKER_KEY=str(key),
        XDG_CONFIG_HOME=str(directory / "no-client-config"),
    )
    return environ


# A deterministic output no period of which lines up with a pipe, a chunk or a message: block
# i (1 MiB) is sha256(i) repeated. The job and the test make it the same way.
PATTERN_SCRIPT = (
    "import hashlib, sys\n"
    "size = int(sys.argv[1]); out = sys.stdout.buffer; i = 0\n"
    "while size > 0:\n"
    "    block = hashlib.sha256(i.to_bytes(8, 'big')).digest() * 32768\n"
    "    out.write(block[:size]); size -= len(block); i += 1\n"
    "out.flush()\n"
)


def pattern_job(size: int, before: str = "") -> pb.JobSpec:
    """A job writing :func:`pattern_bytes` of ``size`` to stdout; ``before`` is shell run
    first (e.g. waiting for a file)."""
    import shlex
    import sys

    write = f"exec {shlex.quote(sys.executable)} -c {shlex.quote(PATTERN_SCRIPT)} {size}"
    return shell(f"{before}\n{write}" if before else write)


def pattern_block(index: int) -> bytes:
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (MiB // 32)


def pattern_bytes(offset: int, size: int) -> bytes:
    """Bytes ``[offset, offset + size)`` of the pattern."""
    parts = []
    end = offset + size
    while offset < end:
        block, inner = divmod(offset, MiB)
        piece = pattern_block(block)[inner : inner + end - offset]
        parts.append(piece)
        offset += len(piece)
    return b"".join(parts)


def pattern_digest(size: int) -> str:
    digest = hashlib.sha256()
    for block in range((size + MiB - 1) // MiB):
        digest.update(pattern_block(block)[: size - block * MiB])
    return digest.hexdigest()


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"16m"``) mounted on ``path`` (made if missing), always
    unmounted on the way out (lazily if something still holds it) and ``path`` removed."""
    path.mkdir(parents=True, exist_ok=True)
    mount_options = ",".join([f"size={size}", "mode=0755", *options])
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", mount_options, "tmpfs", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True, timeout=30)
        path.rmdir()
