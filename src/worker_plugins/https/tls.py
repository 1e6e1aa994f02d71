"""TLS for the transport: checking the PEM files and making the server's ``ssl`` context.

Python's ``ssl`` (unlike grpcio) can require a minimum version: TLS 1.3 by default, whose
every suite is an AEAD with ephemeral key exchange. With ``min_tls = "1.2"``, TLS 1.2 is
limited to ECDHE key exchange with AES-GCM or ChaCha20-Poly1305. Every client must present
a certificate that chains to the configured CA; OpenSSL checks its validity period and, for
a certificate that states its usages, that client authentication is one of them.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from worker_core.plugin import ConfigError

#: OpenSSL cipher string for TLS 1.2: ephemeral ECDH and an AEAD cipher, nothing else.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

_VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


@attrs.frozen
class TlsFiles:
    """Paths of the CA the clients chain to and of the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _read(what: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"https: {what} file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"https: cannot read {what} file {str(path)!r}: {exc.strerror}") from None


def check_files(files: TlsFiles) -> None:
    """Read and parse the three files, so a wrong path or a swapped file is one clear line
    (``ssl`` would say only ``[SSL] PEM lib``)."""
    ca, cert, key = _read("CA", files.ca), _read("certificate", files.cert), _read("key", files.key)
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError:
        raise ConfigError(f"https: CA file {str(files.ca)!r} holds no PEM certificate") from None
    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ConfigError(
            f"https: certificate file {str(files.cert)!r} holds no PEM certificate"
        ) from None
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"https: key file {str(files.key)!r} holds no unencrypted PEM private key"
        ) from None
    if private.public_key() != leaf.public_key():
        raise ConfigError(
            f"https: key file {str(files.key)!r} does not match certificate {str(files.cert)!r}"
        )


def server_context(files: TlsFiles, min_tls: str) -> ssl.SSLContext:
    """The mTLS server context: ``min_tls`` or newer, a client certificate required."""
    check_files(files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_tls]
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD and are not affected
    context.verify_mode = ssl.CERT_REQUIRED
    # No renegotiation (TLS 1.2), no compression (CRIME); one ECDH key per handshake.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(files.cert, files.key)
        context.load_verify_locations(cafile=files.ca)
    except ssl.SSLError as exc:
        raise ConfigError(f"https: cannot use the TLS files: {exc.reason or exc}") from None
    return context
