"""TLS material for the transport: loading and checking PEM files, making credentials.

The server's credentials are gRPC's *dynamic* ones: gRPC asks for the certificate
configuration before each new connection's handshake, so a reload (SIGHUP) swaps the
certificate, key and CA for new connections while those already open carry on.
The cipher policy lives in :mod:`.cipher_policy` (it must run before ``grpc`` is imported).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import attrs
import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from worker_core.plugin import ConfigError
from worker_plugins.certs.fingerprint import serial_hex


@attrs.frozen
class TlsFiles:
    """Paths of the PEM files a server (or client) presents and trusts."""

    ca: Path
    cert: Path
    key: Path


@attrs.frozen
class TlsMaterial:
    """The contents of :class:`TlsFiles`, checked to parse; ``files`` are where they were
    read from (None for material made in memory), for reloading them."""

    ca: bytes
    cert: bytes
    key: bytes
    files: TlsFiles | None = attrs.field(default=None, eq=False)

    @property
    def leaf(self) -> x509.Certificate:
        """The certificate presented (the first of the certificate file)."""
        return x509.load_pem_x509_certificate(self.cert)

    def certificates(self) -> list[tuple[str, x509.Certificate]]:
        """``(what, certificate)`` for the presented chain and every CA trusted, each named
        for a message (``the server certificate /etc/worker/server.pem``)."""
        cert_file = f" {self.files.cert}" if self.files else ""
        ca_file = f" in {self.files.ca}" if self.files else ""
        chain = x509.load_pem_x509_certificates(self.cert)
        named = [(f"the server certificate{cert_file}", chain[0])]
        named += [(f"a CA certificate of the server's chain{cert_file}", c) for c in chain[1:]]
        named += [
            (f"the CA certificate {ca.subject.rfc4514_string()!r}{ca_file}", ca)
            for ca in x509.load_pem_x509_certificates(self.ca)
        ]
        return named

    def describe(self) -> str:
        """``certificate serial 1a2b (until 2027-01-01), CA 'CN=worker CA'`` for the log."""
        leaf = self.leaf
        cas = ", ".join(
            repr(ca.subject.rfc4514_string()) for ca in x509.load_pem_x509_certificates(self.ca)
        )
        return (
            f"certificate serial {serial_hex(leaf)} (until "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}), CA {cas}"
        )


def _read(what: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None


def _certificates(what: str, path: Path, data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, refusing one cut short.

    A file caught while it is being written can hold a whole certificate and the start of
    the next one; the parser would skip the partial block, and gRPC would then fail on it or
    serve an incomplete chain. Every certificate begun must be whole.
    """
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{what} file {str(path)!r} holds no PEM certificate") from None
    begun = data.count(b"-----BEGIN CERTIFICATE-----")
    if begun != len(certificates):
        raise ConfigError(
            f"{what} file {str(path)!r} is incomplete: {begun} certificates begun, "
            f"{len(certificates)} whole (a file still being written?)"
        )
    return certificates


def load_material(files: TlsFiles) -> TlsMaterial:
    """Read and parse the three files, so a wrong path or a swapped file is one clear error.

    gRPC itself would only fail later, at bind or at the first handshake, with a vague message.
    """
    ca, cert, key = _read("CA", files.ca), _read("certificate", files.cert), _read("key", files.key)
    _certificates("CA", files.ca, ca)
    leaf = _certificates("certificate", files.cert, cert)[0]
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"key file {str(files.key)!r} holds no unencrypted PEM private key"
        ) from None
    if private.public_key() != leaf.public_key():
        raise ConfigError(
            f"key file {str(files.key)!r} does not match certificate {str(files.cert)!r}"
        )
    return TlsMaterial(ca, cert, key, files)


def check_current(material: TlsMaterial, now: datetime.datetime) -> None:
    """Refuse a server certificate that is not valid at ``now`` (expired, or not yet).

    For a reload: swapping a working certificate for one every client refuses is always a
    mistake (a renewal run too early, a wrong file), so the one in force stays.
    """
    leaf = material.leaf
    where = f"certificate file {str(material.files.cert)!r}" if material.files else "certificate"
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(f"{where}: it expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            f"{where}: it is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )


def certificate_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    """What gRPC's dynamic credentials serve: the key, the chain and the client CA."""
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


def server_credentials(
    material: TlsMaterial,
    fetch: Callable[[], grpc.ServerCertificateConfiguration | None] = lambda: None,
) -> grpc.ServerCredentials:
    """mTLS server credentials: every client must present a certificate chaining to the CA.

    ``fetch`` runs before each new connection's handshake and returns a new configuration
    to use from then on, or None to keep the current one.
    """
    return grpc.dynamic_ssl_server_credentials(
        certificate_configuration(material), fetch, require_client_authentication=True
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Client credentials: trust only the CA, present the client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )
