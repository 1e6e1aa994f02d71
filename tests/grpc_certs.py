"""Throwaway X.509 material for the gRPC tests, made with the project's own authority.

An ECDSA P-256 CA; a server certificate for localhost/127.0.0.1 (serverAuth); client
certificates (clientAuth) with any CN; and the bad ones the server must refuse: expired, only
serverAuth, issued by another CA. Plain functions so each test module picks what it needs.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from worker_plugins.certs import authority
from worker_plugins.certs.authority import Issued

_DAY = datetime.timedelta(days=1)

#: A CA and its key: the project's own certificate authority builds them (``worker certs``).
CA = Issued


@attrs.frozen
class Identity:
    """A PEM certificate and its PEM private key."""

    cert: bytes
    key: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(self.cert)
        key_path.write_bytes(self.key)
        key_path.chmod(0o600)
        return cert_path, key_path


def make_ca(name: str = "worker test CA") -> CA:
    # Far from the server's 30-day expiry warning, so test servers start quietly.
    return authority.make_ca(name, days=365)


def issue(
    ca: CA,
    cn: str,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    expired: bool = False,
) -> Identity:
    """A leaf certificate for ``cn`` signed by ``ca`` (checked or not) with these usages."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - 10 * _DAY, now - 5 * _DAY) if expired else (now - _DAY, now + 90 * _DAY)
    names = [authority.parse_host(host) for host in (*dns, *ips)]
    leaf = authority.sign_leaf(ca, cn, usages, names, not_before=start, not_after=end)
    return Identity(leaf.cert_pem, leaf.key_pem)


def server_identity(ca: CA) -> Identity:
    return issue(
        ca,
        "localhost",
        (ExtendedKeyUsageOID.SERVER_AUTH,),
        dns=("localhost",),
        ips=("127.0.0.1",),
    )


def client_identity(ca: CA, cn: str) -> Identity:
    return issue(ca, cn, (ExtendedKeyUsageOID.CLIENT_AUTH,))


@attrs.frozen
class TestPKI:
    """Everything a test server and its clients need, also written to ``directory``."""

    __test__ = False  # not a pytest test class

    ca: CA
    other_ca: CA
    server: Identity
    directory: Path

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    def client(self, cn: str) -> Identity:
        return client_identity(self.ca, cn)

    def expired_client(self, cn: str) -> Identity:
        return issue(self.ca, cn, expired=True)

    def server_only_client(self, cn: str) -> Identity:
        """A certificate from the right CA whose only usage is serverAuth."""
        return issue(self.ca, cn, (ExtendedKeyUsageOID.SERVER_AUTH,))

    def foreign_client(self, cn: str) -> Identity:
        """A clientAuth certificate from a CA the server does not trust."""
        return client_identity(self.other_ca, cn)


def make_pki(directory: Path) -> TestPKI:
    ca = make_ca()
    pki = TestPKI(ca, make_ca("some other CA"), server_identity(ca), directory)
    directory.mkdir(parents=True, exist_ok=True)
    pki.ca_path.write_bytes(ca.cert_pem)
    pki.server.write(directory, "server")
    return pki
