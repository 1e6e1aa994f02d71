"""Who is calling: the Common Name of the verified client certificate of the connection.

Identity comes from the TLS session (``ssl``'s ``getpeercert`` on the request's transport,
after OpenSSL verified the chain against the configured CA), never from a header, which the
client controls. The certificate must also state the clientAuth usage: a server certificate
from the same CA must not open a client session.

A connection's peer cannot change (no renegotiation: TLS 1.3, or 1.2 with it disabled; no
post-handshake authentication is asked for), so the answer is kept per connection and a
kept-alive client's requests do not fetch and hash the certificate again each time.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import weakref

from cryptography import x509

from worker_core.plugin import Principal
from worker_plugins.certs.client_identity import Unauthenticated, principal_of


@functools.lru_cache(maxsize=1024)
def principal_from_der(der: bytes) -> Principal:
    """The principal a DER client certificate names; :class:`Unauthenticated` if it may not
    authenticate a client. Cached: a client sends many requests with one certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise Unauthenticated("the client certificate cannot be parsed") from exc
    return principal_of(cert)


def peer_principal(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Principal:
    """The principal of the connection's verified peer (``get_extra_info("ssl_object")``)."""
    if ssl_object is None:
        raise Unauthenticated("a TLS connection with a client certificate is required")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise Unauthenticated("a client certificate is required")
    return principal_from_der(der)


#: Each open connection's answer: its principal, or why it has none. Gone with the connection.
_by_connection: weakref.WeakKeyDictionary[asyncio.BaseTransport, Principal | str]
_by_connection = weakref.WeakKeyDictionary()


def connection_principal(transport: asyncio.BaseTransport | None) -> Principal:
    """:func:`peer_principal` of the connection ``transport`` is (a request's transport),
    worked out once per connection."""
    if transport is None:
        raise Unauthenticated("a TLS connection with a client certificate is required")
    known = _by_connection.get(transport)
    if known is None:
        try:
            known = peer_principal(transport.get_extra_info("ssl_object"))
        except Unauthenticated as exc:
            known = str(exc)
        _by_connection[transport] = known
    if isinstance(known, str):
        raise Unauthenticated(known)
    return known
