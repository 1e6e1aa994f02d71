"""How a certificate is named for revocation: its serial number and its SHA-256 fingerprint.

One spelling of each, used everywhere: what a transport puts in
:class:`~worker_core.plugin.Principal` (``cert_serial``, ``cert_sha256``), what ``worker certs
show`` prints and what a policy's ``[revoked]`` entries are turned into. Both are lowercase
hex without separators; a serial has no leading zeros (it is a number: ``openssl`` prints
``0A1B``, a browser ``0a:1b``, both mean ``a1b``).
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

#: RFC 5280 caps a serial number at 20 octets.
MAX_SERIAL_DIGITS = 40
SHA256_DIGITS = 64

# Hex digits, optionally in groups separated by single colons ("0a:1b:2c").
_HEX = re.compile(r"[0-9A-Fa-f]+(?::[0-9A-Fa-f]+)*")


def serial_hex(cert: x509.Certificate) -> str:
    """``cert``'s serial number, canonical: lowercase hex, no leading zeros."""
    return f"{cert.serial_number:x}"


def sha256_hex(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of ``cert``'s DER encoding, as 64 lowercase hex digits."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normalize_serial(text: str) -> str:
    """A serial as people write it (``0A1B``, ``0a:1b``) in the canonical spelling.

    Raises :class:`ValueError` saying what a serial looks like.
    """
    digits = text.strip().replace(":", "") if _HEX.fullmatch(text.strip()) else ""
    if not digits or len(digits) > MAX_SERIAL_DIGITS:
        raise ValueError(
            f"not a certificate serial number: {text!r} (expected up to {MAX_SERIAL_DIGITS} "
            'hex digits, optionally separated by colons: "0a1b2c" or "0A:1B:2C")'
        )
    return f"{int(digits, 16):x}"


def normalize_sha256(text: str) -> str:
    """A SHA-256 fingerprint as people write it (``AB:CD:...``, ``abcd...``), canonical.

    Raises :class:`ValueError` saying what a fingerprint looks like.
    """
    digits = text.strip().replace(":", "") if _HEX.fullmatch(text.strip()) else ""
    if len(digits) != SHA256_DIGITS:
        raise ValueError(
            f"not a SHA-256 fingerprint: {text!r} (expected {SHA256_DIGITS} hex digits, "
            'optionally separated by colons: "AB:CD:..." as openssl prints it, or as '
            "`worker certs show` does)"
        )
    return digits.lower()
