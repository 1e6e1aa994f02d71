"""A real ``worker serve`` whose certificates and policy a test rewrites, then sends SIGHUP.

The server is the one :func:`grpc_harness.launch_serve` starts (rbac on, jobs as root).
Its CA lives a year, so the only expiry warnings are those a test asks for. What a new
connection is served is read with a plain TLS handshake (Python's ``ssl``), independent of
the gRPC client.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import attrs
import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_certs import Identity, TestPKI
from grpc_harness import RPC_TIMEOUT, Launched, launch_serve, wait_for

from worker_plugins.certs import authority
from worker_plugins.certs.authority import Issued
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

#: Bound on a reload round's outcome appearing in the server's log.
RELOAD_TIMEOUT = 30.0
#: Bound on the server's exit once told to stop.
EXIT_TIMEOUT = 60.0

_DAY = datetime.timedelta(days=1)

#: alice may submit and see her own jobs; bob is named but has no role; admin sees all.
POLICY = """\
[roles.operator]
permissions = ["submit", "read:own", "stop:own"]

[roles.admin]
permissions = ["submit", "read:all", "stop:all"]

[users]
alice = ["operator"]
admin = ["admin"]
bob = []
"""


def server_certificate(ca: Issued, days: float = 90.0) -> Identity:
    """A server certificate for 127.0.0.1 and localhost from ``ca``, a new serial each time,
    expiring ``days`` from now (negative: it expired that long ago)."""
    now = datetime.datetime.now(datetime.UTC)
    names = [authority.parse_host("localhost"), authority.parse_host("127.0.0.1")]
    not_after = now + days * _DAY
    leaf = authority.sign_leaf(
        ca,
        "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH],
        names,
        not_before=min(now - datetime.timedelta(hours=1), not_after - 30 * _DAY),
        not_after=not_after,
    )
    return Identity(leaf.cert_pem, leaf.key_pem)


def make_rotation_pki(directory: Path, ca_days: int = 365, server_days: float = 90.0) -> TestPKI:
    """A CA lasting ``ca_days`` and a server certificate lasting ``server_days``, written to
    ``directory`` as the server reads them (``ca.pem``, ``server.pem``, ``server.key``)."""
    ca = authority.make_ca("rotation test CA", days=ca_days)
    pki = TestPKI(
        ca, authority.make_ca("another CA", days=30), server_certificate(ca, server_days), directory
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki.ca_path.write_bytes(ca.cert_pem)
    pki.server.write(directory, "server")
    return pki


def replace_file(path: Path, data: bytes) -> None:
    """Write ``path`` the way a careful tool does: a temporary file, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


@attrs.define
class Rotating:
    """The running server, its files, and the clients made of it."""

    launched: Launched
    pki: TestPKI
    policy: Path
    directory: Path
    _channels: list[grpc.Channel] = attrs.Factory(list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.launched.port}"

    @property
    def stderr(self) -> str:
        return self.launched.stderr

    def channel(self, identity: Identity, ca_pem: bytes | None = None) -> grpc.Channel:
        """A channel of its own (its own connection, hence its own handshake)."""
        creds = grpc.ssl_channel_credentials(
            ca_pem or self.pki.ca.cert_pem, identity.key, identity.cert
        )
        channel = grpc.secure_channel(
            self.target, creds, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._channels.append(channel)
        return channel

    def stub(self, identity: Identity) -> pb_grpc.WorkerStub:
        return pb_grpc.WorkerStub(self.channel(identity))

    def served_certificate(self, identity: Identity) -> x509.Certificate:
        """The certificate a new TLS connection is served (``identity`` as the client's)."""
        cert_file, key_file = identity.write(self.directory, "handshake-client")
        context = ssl.create_default_context(cadata=self.pki.ca.cert_pem.decode())
        context.load_cert_chain(cert_file, key_file)
        context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", self.launched.port), RPC_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def outcome_lines(self, name: str) -> list[str]:
        """Every line reporting a reload of ``name`` (``grpc``, ``rbac``), done or failed."""
        pattern = re.compile(rf"(?:reloaded {name}: |reload: {name}: )")
        return [line for line in self.stderr.splitlines() if pattern.search(line)]

    def hup(self, *names: str) -> dict[str, str]:
        """Send SIGHUP and wait for one new outcome line of each of ``names``; those lines."""
        before = {name: len(self.outcome_lines(name)) for name in names}
        self.launched.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                all(len(self.outcome_lines(n)) > before[n] for n in names)
                or self.launched.process.poll() is not None
            ),
            timeout=RELOAD_TIMEOUT,
            what=f"the reload of {', '.join(names)}",
        )
        assert self.launched.process.poll() is None, f"the server exited:\n{self.stderr}"
        return {name: self.outcome_lines(name)[before[name]] for name in names}

    def stop(self) -> int:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self.launched.process.terminate()
        return self.launched.process.wait(EXIT_TIMEOUT)


def write_config(directory: Path, policy_text: str = POLICY) -> tuple[Path, Path]:
    """``server.toml`` naming ``policy.toml`` (relative: the config file's directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.toml"
    policy.write_text(policy_text)
    config = directory / "server.toml"
    config.write_text('[plugins.rbac]\npolicy = "policy.toml"\n')
    return config, policy


@contextlib.contextmanager
def rotating_server(
    directory: Path,
    *,
    policy_text: str = POLICY,
    pki: TestPKI | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Rotating]:
    """``worker serve --plugins rbac`` on fresh files in ``directory``; stopped at the end."""
    pki = pki or make_rotation_pki(directory / "pki")
    config, policy = write_config(directory / "etc", policy_text)
    launched = launch_serve(pki, "--plugins", "rbac", "--config", str(config), env=env)
    server = Rotating(launched, pki, policy, directory)
    try:
        yield server
    finally:
        for channel in server._channels:
            channel.close()
        launched.reap()
