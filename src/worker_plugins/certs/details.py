"""What ``worker certs show`` prints about a certificate: who, by whom, which one, until when."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from .expiry import WARN_WITHIN_DAYS, days_left
from .fingerprint import serial_hex, sha256_hex

_USAGE_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every PEM certificate in ``data`` (a CA file may hold several); ValueError if none."""
    return x509.load_pem_x509_certificates(data)


def _time(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _left(cert: x509.Certificate, now: datetime.datetime) -> str:
    if cert.not_valid_after_utc <= now:
        ago = (now - cert.not_valid_after_utc) // datetime.timedelta(days=1)
        return (
            "0 (expired today)"
            if ago == 0
            else f"0 (expired {ago} day{'s' if ago != 1 else ''} ago)"
        )
    left = days_left(cert, now)
    if cert.not_valid_before_utc > now:
        return f"{left} (not valid yet)"
    if cert.not_valid_after_utc - now <= datetime.timedelta(days=WARN_WITHIN_DAYS):
        return f"{left} (expires within {WARN_WITHIN_DAYS} days: renew it)"
    return str(left)


def _kind(cert: x509.Certificate) -> str:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        return "CA"
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "any (no extended key usage)"
    return ", ".join(_USAGE_NAMES.get(oid, oid.dotted_string) for oid in usage)


def _names(cert: x509.Certificate) -> str | None:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return ", ".join(str(name.value) for name in names)


def describe(cert: x509.Certificate, now: datetime.datetime) -> list[tuple[str, str]]:
    """``(field, value)`` pairs, in the order printed. The serial and the fingerprint are
    spelt as a policy's ``[revoked]`` section accepts them."""
    fields = [
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("serial", serial_hex(cert)),
        ("sha256", sha256_hex(cert)),
        ("usage", _kind(cert)),
    ]
    names = _names(cert)
    if names:
        fields.append(("names", names))
    fields += [
        ("not before", _time(cert.not_valid_before_utc)),
        ("not after", _time(cert.not_valid_after_utc)),
        ("days left", _left(cert, now)),
    ]
    return fields
