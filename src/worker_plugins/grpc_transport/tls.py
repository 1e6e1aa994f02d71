"""TLS material for the transport: loading and checking PEM files, making credentials.

The cipher policy lives in :mod:`.cipher_policy` (it must run before ``grpc`` is imported).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from worker_core.plugin import ConfigError


@attrs.frozen
class TlsFiles:
    """Paths of the PEM files a server (or client) presents and trusts."""

    ca: Path
    cert: Path
    key: Path


@attrs.frozen
class TlsMaterial:
    """The contents of :class:`TlsFiles`, checked to parse."""

    ca: bytes
    cert: bytes
    key: bytes


def _read(what: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None


def load_material(files: TlsFiles) -> TlsMaterial:
    """Read and parse the three files, so a wrong path or a swapped file is one clear error.

    gRPC itself would only fail later, at bind or at the first handshake, with a vague message.
    """
    ca, cert, key = _read("CA", files.ca), _read("certificate", files.cert), _read("key", files.key)
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError:
        raise ConfigError(f"CA file {str(files.ca)!r} holds no PEM certificate") from None
    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ConfigError(
            f"certificate file {str(files.cert)!r} holds no PEM certificate"
        ) from None
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
    return TlsMaterial(ca, cert, key)


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """mTLS server credentials: every client must present a certificate chaining to the CA."""
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.ca,
        require_client_auth=True,
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Client credentials: trust only the CA, present the client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )
