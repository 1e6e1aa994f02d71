"""Throwaway X.509 material for the gRPC tests, made with ``cryptography``.

An ECDSA P-256 CA; a server certificate for localhost/127.0.0.1 (serverAuth); client
certificates (clientAuth) with any CN; and the bad ones the server must refuse: expired, only
serverAuth, issued by another CA. Plain functions so each test module picks what it needs.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


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


@attrs.frozen
class CA:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(name: str = "worker test CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(name, key, cert)


def issue(
    ca: CA,
    cn: str,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    expired: bool = False,
) -> Identity:
    """A leaf certificate for ``cn`` signed by ``ca`` with the given extended key usages."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - 10 * _DAY, now - 5 * _DAY) if expired else (now - _DAY, now + 30 * _DAY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


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
    pki.ca_path.write_bytes(ca.pem)
    pki.server.write(directory, "server")
    return pki
