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
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from worker_core.plugin import Principal
from worker_plugins.certs.fingerprint import serial_hex, sha256_hex


class Unauthenticated(Exception):
    """The connection carries no usable client certificate; the message says why."""


@functools.lru_cache(maxsize=1024)
def principal_from_der(der: bytes) -> Principal:
    """The principal a DER client certificate names; :class:`Unauthenticated` if it may not
    authenticate a client. Cached: a client sends many requests with one certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise Unauthenticated("the client certificate cannot be parsed") from exc
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    # No extendedKeyUsage at all would mean "any usage" in X.509 (and OpenSSL lets it pass);
    # the usage must be stated, as `worker certs` always does.
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
    # Serial and fingerprint let the policy refuse a revoked certificate (rbac [revoked]).
    return Principal(cn, cert_serial=serial_hex(cert), cert_sha256=sha256_hex(cert))


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
