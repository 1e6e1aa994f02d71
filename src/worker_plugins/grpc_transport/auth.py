"""Who is calling: the Common Name of the peer's verified client certificate, with that
certificate's serial number and SHA-256 fingerprint (so a revoked one can be refused).

Identity comes from the TLS auth context the gRPC core fills after the handshake (the chain
was verified against the configured CA there), never from request metadata, which the client
controls. The handshake does not check what the certificate is *for*, so this module also
refuses a certificate without the clientAuth extended key usage (a server certificate from
the same CA must not open a client session).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from worker_core.plugin import Principal
from worker_plugins.certs.fingerprint import serial_hex, sha256_hex

PEM_CERT_KEY = "x509_pem_cert"


class Unauthenticated(Exception):
    """The peer presented no usable client certificate; the message says why."""


@functools.lru_cache(maxsize=1024)
def _principal_from_pem(pem: bytes) -> Principal:
    # Cached by the PEM bytes: a client opens many calls with one certificate, and parsing
    # is the only per-call cost of authentication.
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Unauthenticated("the client certificate cannot be parsed") from exc
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    # No extendedKeyUsage extension at all would mean "any usage" in X.509; we require the
    # usage to be stated, as `worker certs` always does.
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise Unauthenticated("the client certificate is not valid for client authentication")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise Unauthenticated("the client certificate must carry exactly one Common Name")
    cn = names[0].value
    if isinstance(cn, bytes):
        cn = cn.decode("utf-8", "replace")
    if not cn or "\0" in cn:
        raise Unauthenticated("the client certificate's Common Name is empty or malformed")
    # The serial and fingerprint let an authorization plugin refuse a revoked certificate
    # (rbac's [revoked]); spelt as worker_plugins.certs.fingerprint spells them everywhere.
    return Principal(cn, cert_serial=serial_hex(cert), cert_sha256=sha256_hex(cert))


def peer_principal(auth_context: Mapping[str, Iterable[bytes]]) -> Principal:
    """The principal of a verified peer, from ``ServicerContext.auth_context()``.

    Raises :class:`Unauthenticated` when there is no client certificate (a plaintext or
    one-way TLS connection) or it does not allow client authentication.
    """
    pems = list(auth_context.get(PEM_CERT_KEY, ()))
    if len(pems) != 1:
        raise Unauthenticated("a client certificate is required")
    return _principal_from_pem(bytes(pems[0]))
