"""Who is calling: the Common Name of the peer's verified client certificate, with that
certificate's serial number and SHA-256 fingerprint (so a revoked one can be refused).

Identity comes from the TLS auth context the gRPC core fills after the handshake (the chain
was verified against the configured CA there), never from request metadata, which the client
controls. What the certificate must say to name a client (the clientAuth usage, one Common
Name) is checked by :mod:`worker_plugins.certs.client_identity`, as for every transport.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from cryptography import x509

from worker_core.plugin import Principal
from worker_plugins.certs.client_identity import Unauthenticated, principal_of

PEM_CERT_KEY = "x509_pem_cert"


@functools.lru_cache(maxsize=1024)
def _principal_from_pem(pem: bytes) -> Principal:
    # Cached by the PEM bytes: a client opens many calls with one certificate, and parsing
    # is the only per-call cost of authentication.
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Unauthenticated("the client certificate cannot be parsed") from exc
    return principal_of(cert)


def peer_principal(auth_context: Mapping[str, Iterable[bytes]]) -> Principal:
    """The principal of a verified peer, from ``ServicerContext.auth_context()``.

    Raises :class:`Unauthenticated` when there is no client certificate (a plaintext or
    one-way TLS connection) or it does not allow client authentication.
    """
    pems = list(auth_context.get(PEM_CERT_KEY, ()))
    if len(pems) != 1:
        raise Unauthenticated("a client certificate is required")
    return _principal_from_pem(bytes(pems[0]))
