"""Who a verified client certificate names: the one check every transport makes.

The TLS handshake proves the chain; it does not check what the certificate is *for*. A
transport hands the peer's certificate here after the handshake and gets the
:class:`~worker_core.plugin.Principal` it authenticates, or :class:`Unauthenticated` saying
why it authenticates nobody. Identity comes from the certificate alone, never from what the
client says in a request.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from worker_core.plugin import Principal

from .fingerprint import serial_hex, sha256_hex


class Unauthenticated(Exception):
    """The peer presented no usable client certificate; the message says why."""


def principal_of(cert: x509.Certificate) -> Principal:
    """The principal ``cert`` names: its one Common Name, with its serial and fingerprint.

    Refused: no clientAuth extended key usage (a server certificate from the same CA must
    not open a client session), not exactly one Common Name, an empty or malformed one.
    """
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
    # The serial and fingerprint let an authorization plugin refuse a revoked certificate
    # (rbac's [revoked]); spelt as worker_plugins.certs.fingerprint spells them everywhere.
    return Principal(cn, cert_serial=serial_hex(cert), cert_sha256=sha256_hex(cert))
