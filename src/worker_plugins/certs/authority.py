"""Building the certificates: a CA, a server certificate and client certificates.

Pure functions over ``cryptography``: nothing here touches the file system or the terminal
(:mod:`.store` reads and writes the files, :mod:`.commands` is the command line). Every key is
ECDSA P-256 and every signature SHA-256: small, fast, and accepted by every TLS stack gRPC
links against.

What each certificate may do is stated explicitly, because the server relies on it: the CA
can sign only leaf certificates (``pathLength 0``), the server certificate is good only for
``serverAuth`` and the names given, and a client certificate only for ``clientAuth`` — so a
server's certificate from the same CA cannot open a client session, and the Common Name of a
client certificate is the caller's identity.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Default lifetimes, in days: about five years for the CA, one year for a leaf.
CA_DAYS = 5 * 365 + 1
LEAF_DAYS = 365

#: The names a server certificate covers unless told otherwise.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

DEFAULT_CA_NAME = "worker CA"

#: Files a client name must not collide with (``ca.pem``, ``server.key``...).
RESERVED_NAMES = frozenset({"ca", "server"})

# A client's Common Name is both its identity in the policy and the stem of its file names:
# keep it to characters that are safe in both (no '/', no leading '.' or '-').
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

# A certificate made now is valid from a little earlier, so a peer whose clock runs slightly
# behind does not reject it as "not yet valid".
_BACKDATE = datetime.timedelta(hours=1)


class CertificateError(Exception):
    """A request the authority cannot honour (a bad name, a CA that is not one); one line."""


@attrs.frozen
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        # Unencrypted PKCS#8: the server and the clients load it without a passphrase; the
        # file's mode (0600) is what protects it.
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def common_name(self) -> str:
        return common_name(self.cert)

    @property
    def expires(self) -> datetime.datetime:
        return self.cert.not_valid_after_utc


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value.decode() if isinstance(value, bytes) else value


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _positive_days(days: int) -> datetime.timedelta:
    if days < 1:
        raise CertificateError(f"the lifetime must be at least 1 day, got {days}")
    return datetime.timedelta(days=days)


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,  # ECDSA keys sign; they never encrypt a premaster secret
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(name: str = DEFAULT_CA_NAME, days: int = CA_DAYS) -> Issued:
    """A new self-signed CA that may sign leaf certificates only."""
    if not name.strip():
        raise CertificateError("the CA name must not be empty")
    lifetime = _positive_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(_subject(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        # pathLength 0: a certificate this CA signs can never itself act as a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def check_ca(ca: Issued) -> None:
    """Refuse a "CA" that cannot sign certificates, or whose key is not its certificate's."""
    try:
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError(f"{ca.common_name!r} is not a CA certificate")
    if ca.cert.public_key() != ca.key.public_key():
        raise CertificateError("the CA key does not belong to the CA certificate")
    if ca.expires <= _now():
        raise CertificateError(f"the CA certificate expired on {ca.expires:%Y-%m-%d}")


def check_client_name(name: str) -> str:
    """``name`` if it can be a client's Common Name and file stem; raise otherwise."""
    if not _CLIENT_NAME.fullmatch(name):
        raise CertificateError(
            f"bad client name {name!r}: use 1-64 letters, digits and . _ @ + -, "
            "not starting with . or -"
        )
    if name.lower() in RESERVED_NAMES:
        raise CertificateError(f"bad client name {name!r}: it would overwrite {name}.pem")
    return name


def parse_host(host: str) -> x509.GeneralName:
    """An IP address becomes an IP SAN, anything else must be a DNS name (``*.`` allowed)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if labels and labels[0] == "*":  # a wildcard may only stand for the leftmost label
        labels = labels[1:]
    if not labels or len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise CertificateError(f"bad host {host!r}: not an IP address or a DNS name")
    return x509.DNSName(host.removesuffix(".").lower())


def _leaf(
    ca: Issued,
    cn: str,
    days: int,
    usage: x509.ObjectIdentifier,
    names: Sequence[x509.GeneralName] = (),
) -> Issued:
    check_ca(ca)
    lifetime = _positive_days(days)
    now = _now()
    # A leaf outliving its CA would only fail later, and more confusingly: clamp it.
    not_after = min(now + lifetime, ca.expires)
    # Exactly one purpose each: the server checks clientAuth on every caller.
    return sign_leaf(ca, cn, [usage], names, not_before=now - _BACKDATE, not_after=not_after)


def sign_leaf(
    issuer: Issued,
    cn: str,
    usages: Sequence[x509.ObjectIdentifier],
    names: Sequence[x509.GeneralName] = (),
    *,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> Issued:
    """A new key and a leaf certificate for it, signed by ``issuer`` as given: no checks.

    The certificates :func:`issue_server` and :func:`issue_client` make, built from the parts;
    ``usages`` empty leaves the extended-key-usage extension out. Tests use it directly for
    the certificates a server must refuse (expired, the wrong usage, a forged issuer).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(cn))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def issue_server(ca: Issued, hosts: Iterable[str] = DEFAULT_HOSTS, days: int = LEAF_DAYS) -> Issued:
    """A server certificate for ``hosts`` (DNS names and IP addresses), serverAuth only.

    TLS clients match the name they dialled against the subject alternative names only, so
    every host goes there; the Common Name is the first one, for people reading the cert.
    """
    hosts = list(dict.fromkeys(hosts))  # keep the order, drop repeats
    if not hosts:
        raise CertificateError("a server certificate needs at least one --host")
    names = [parse_host(h) for h in hosts]
    return _leaf(ca, hosts[0], days, ExtendedKeyUsageOID.SERVER_AUTH, names)


def issue_client(ca: Issued, name: str, days: int = LEAF_DAYS) -> Issued:
    """A client certificate whose Common Name is ``name`` (the caller's identity), clientAuth only."""
    return _leaf(ca, check_client_name(name), days, ExtendedKeyUsageOID.CLIENT_AUTH)


def load_identity(cert_pem: bytes, key_pem: bytes, what: str) -> Issued:
    """Parse a PEM certificate and its unencrypted PEM P-256 key; ``what`` names them in errors."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertificateError(f"{what}: not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what}: the key is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{what}: the key is not an ECDSA key")
    return Issued(cert, key)
