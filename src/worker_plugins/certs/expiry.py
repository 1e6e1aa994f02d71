"""When a certificate stops being valid, and the warning a server gives ahead of it.

Pure functions over ``cryptography`` certificates and a given "now", so the server's
start-up check, its daily check and ``worker certs show`` agree to the day and tests need no
clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from cryptography import x509

from .fingerprint import serial_hex, sha256_hex

#: A certificate expiring within this many days is warned about.
WARN_WITHIN_DAYS = 30

_DAY = datetime.timedelta(days=1)


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def days_left(cert: x509.Certificate, now: datetime.datetime) -> int:
    """Whole days until ``cert`` expires (0 on its last day; negative once expired)."""
    return (cert.not_valid_after_utc - now) // _DAY


def expiry_warning(
    what: str,
    cert: x509.Certificate,
    now: datetime.datetime,
    within_days: int = WARN_WITHIN_DAYS,
) -> str | None:
    """The warning for ``cert`` (``what`` names it: "the server certificate /etc/...") if it
    has expired, is not valid yet, or expires within ``within_days``; None otherwise."""
    until = cert.not_valid_after_utc
    ident = f"serial {serial_hex(cert)}"
    if until <= now:
        return f"{what} ({ident}) expired on {until:%Y-%m-%d %H:%M} UTC: replace it"
    if cert.not_valid_before_utc > now:
        since = cert.not_valid_before_utc
        return f"{what} ({ident}) is not valid before {since:%Y-%m-%d %H:%M} UTC"
    if until - now > datetime.timedelta(days=within_days):
        return None
    left = days_left(cert, now)
    when = "in less than a day" if left == 0 else f"in {left} day{'s' if left != 1 else ''}"
    return (
        f"{what} ({ident}) expires {when}, on {until:%Y-%m-%d %H:%M} UTC: renew it "
        "and send the server SIGHUP to load the new one"
    )


def expiry_warnings(
    certificates: Iterable[tuple[str, x509.Certificate]],
    now: datetime.datetime,
    within_days: int = WARN_WITHIN_DAYS,
) -> list[str]:
    """:func:`expiry_warning` of each ``(what, cert)``; a certificate offered twice (two
    transports sharing one file) is warned about once."""
    seen: set[str] = set()
    warnings: list[str] = []
    for what, cert in certificates:
        fingerprint = sha256_hex(cert)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        warning = expiry_warning(what, cert, now, within_days)
        if warning is not None:
            warnings.append(warning)
    return warnings
