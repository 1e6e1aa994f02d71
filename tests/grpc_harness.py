"""A real engine behind a real mTLS gRPC server on 127.0.0.1, for the gRPC tests.

A plain module (not a conftest) so each test module builds exactly the server it needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs
import grpc
from grpc_certs import Identity, TestPKI, make_pki
from helpers import wait_until

from worker_core._config import Config
from worker_core._engine import Engine
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc
from worker_plugins.grpc_transport.config import GrpcConfig
from worker_plugins.grpc_transport.server import GrpcServer
from worker_plugins.grpc_transport.tls import TlsFiles

#: Bound on every RPC a test makes.
RPC_TIMEOUT = 20.0


@attrs.define
class Harness:
    engine: Engine
    server: GrpcServer
    pki: TestPKI
    port: int
    _channels: list[grpc.Channel] = attrs.Factory(list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, identity: Identity | None) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            self.pki.ca.cert_pem,
            identity.key if identity else None,
            identity.cert if identity else None,
        )
        channel = grpc.secure_channel(
            self.target, creds, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self._channels.append(channel)
        return channel

    def stub(self, cn: str = "alice") -> pb_grpc.WorkerStub:
        return pb_grpc.WorkerStub(self.channel(self.pki.client(cn)))

    def stub_for(self, identity: Identity | None) -> pb_grpc.WorkerStub:
        return pb_grpc.WorkerStub(self.channel(identity))

    def close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


@contextlib.contextmanager
def running_server(
    directory: Path,
    plugins: Sequence[str | object] = (),
    grpc_config: GrpcConfig | None = None,
    config: Config | None = None,
) -> Iterator[Harness]:
    pki = make_pki(directory)
    engine = Engine(list(plugins), config).start()
    server = GrpcServer(engine, grpc_config)
    try:
        port = server.start(
            "127.0.0.1", 0, TlsFiles(pki.ca_path, pki.server_cert_path, pki.server_key_path)
        )
        harness = Harness(engine, server, pki, port)
        try:
            yield harness
        finally:
            harness.close_channels()
    finally:
        # Jobs first (their followers end normally), then the server: the order `serve` uses.
        engine.close(grace=0.5)
        server.stop(1.0)


@contextlib.contextmanager
def running_rbac_server(directory: Path, policy_text: str) -> Iterator[Harness]:
    """A server with the ``rbac`` plugin and ``policy_text`` as its policy file."""
    policy = directory / "policy.toml"
    policy.write_text(policy_text)
    config = Config(plugins={"rbac": {"policy": str(policy)}})
    with running_server(directory / "pki", plugins=["rbac"], config=config) as harness:
        yield harness


def spec(*argv: str) -> pb.JobSpec:
    return pb.JobSpec(command=argv[0], args=list(argv[1:]))


def shell(script: str) -> pb.JobSpec:
    return spec("/bin/sh", "-c", script)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """:func:`helpers.wait_until`, failing the test when ``timeout`` passes."""
    if not wait_until(lambda: bool(predicate()), timeout, interval=0.02):
        raise AssertionError(f"timed out waiting for {what or predicate}")


# --- `worker serve` as a subprocess ----------------------------------------------------------

WORKER = [sys.executable, "-c", "from worker_core.cli import main; main()"]

#: A `worker` whose process imported grpc before the transport could set what gRPC core reads
#: at import (cipher suites, log level): `serve` must notice and re-execute itself.
WORKER_GRPC_FIRST = [
    sys.executable,
    "-c",
    "import grpc; from worker_core.cli import main; main()",
]


@attrs.define
class ServeProcess:
    process: subprocess.Popen[str]
    port: int
    pki: TestPKI
    stderr_lines: list[str]

    def stub(self, cn: str = "alice") -> pb_grpc.WorkerStub:
        identity = self.pki.client(cn)
        creds = grpc.ssl_channel_credentials(self.pki.ca.cert_pem, identity.key, identity.cert)
        return pb_grpc.WorkerStub(grpc.secure_channel(f"127.0.0.1:{self.port}", creds))

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)


@attrs.define
class Launched:
    """A ``worker serve`` process; ``port`` is set once it reported the port it listens on."""

    process: subprocess.Popen[str]
    port: int
    stderr_lines: list[str]
    reader: threading.Thread

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def reap(self) -> None:
        """Kill it if it is still running (callers stop it their own way first)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.reader.join(5)


#: The start-up summary's gRPC address: ``listening on 127.0.0.1:PORT (grpc); ...``.
LISTENING = re.compile(r"listening on (?:\S+ \(\w+\), )*127\.0\.0\.1:(\d+) \(grpc\)")


def _jobs_as_root(extra: Sequence[str]) -> list[str]:
    """``extra`` with ``no:runas`` among the plugins unless the test names ``runas``.

    serve runs jobs as nobody by default; most tests run this venv's python, which lives
    under /root (0700) and which nobody cannot execute, and write to pytest's private temp
    directories. Tests of the identity itself name ``runas`` and get serve's defaults.
    """
    args = list(extra)
    if "--plugins" in args:
        i = args.index("--plugins") + 1
        names = args[i].split(",")
        if "runas" not in names and "no:runas" not in names:
            args[i] = ",".join([*names, "no:runas"])
        return args
    return [*args, "--plugins", "no:runas"]


def spawn_serve(
    pki: TestPKI,
    *extra: str,
    worker: Sequence[str] = WORKER,
    env: Mapping[str, str] | None = None,
    stdout: int | None = None,
    grpc_flags: bool = True,
) -> Launched:
    """Start ``worker serve`` on a free loopback port with ``pki``; do not wait for it.

    Its state directory is ``state`` beside the certificates unless ``extra`` names one, so
    no test touches the default ``/var/lib/worker``. ``env`` is added to the environment.
    ``grpc_flags=False`` leaves out ``--listen``, ``--ca``, ``--cert`` and ``--key``.
    """
    argv = [*worker, "serve"]
    if grpc_flags:
        argv += ["--listen", "127.0.0.1:0", "--ca", str(pki.ca_path)]
        argv += ["--cert", str(pki.server_cert_path), "--key", str(pki.server_key_path)]
    argv += _jobs_as_root(extra)
    if "--state-dir" not in extra:
        argv += ["--state-dir", str(pki.directory / "state")]
    # The server must set the cipher policy itself, as in production.
    environ = {k: v for k, v in os.environ.items() if k != "GRPC_SSL_CIPHER_SUITES"}
    environ.update(env or {})
    process = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=environ)
    lines: list[str] = []
    assert process.stderr is not None
    stream = process.stderr
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    return Launched(process, 0, lines, reader)


def launch_serve(
    pki: TestPKI,
    *extra: str,
    worker: Sequence[str] = WORKER,
    ready_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Launched:
    """:func:`spawn_serve`, then wait until it listens (its port is then ``port``)."""
    launched = spawn_serve(pki, *extra, worker=worker, env=env)
    lines, process = launched.stderr_lines, launched.process
    try:
        wait_for(
            lambda: any(LISTENING.search(x) for x in lines) or process.poll() is not None,
            timeout=ready_timeout,
            what="worker serve to listen",
        )
        match = next((m for x in list(lines) if (m := LISTENING.search(x))), None)
        assert match, f"worker serve did not start: {''.join(lines)}"
    except BaseException:
        launched.reap()
        raise
    launched.port = int(match.group(1))
    return launched


@contextlib.contextmanager
def serve_process(
    directory: Path,
    *extra: str,
    worker: Sequence[str] = WORKER,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServeProcess]:
    """``worker serve`` on a free loopback port with fresh certificates; killed if left running."""
    pki = make_pki(directory)
    launched = launch_serve(pki, *extra, worker=worker, env=env)
    try:
        yield ServeProcess(launched.process, launched.port, pki, launched.stderr_lines)
    finally:
        launched.reap()


def collect(messages: Iterable[pb.OutputChunk]) -> dict[int, bytes]:
    """The bytes of each stream of a Tail, checking that offsets are contiguous."""
    data: dict[int, bytearray] = {}
    for message in messages:
        buf = data.setdefault(message.stream, bytearray())
        assert message.offset == len(buf), "a gap or an overlap in the stream"
        buf += message.data
    return {k: bytes(v) for k, v in data.items()}
