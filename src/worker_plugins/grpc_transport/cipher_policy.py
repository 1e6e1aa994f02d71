"""TLS 1.2 cipher policy for gRPC: ECDHE key exchange with AEAD ciphers only.

grpcio exposes no minimum-TLS-version setting (``grpc.ssl_server_credentials`` has none; see
grpc/grpc#37305). Its core refuses anything older than TLS 1.2 and negotiates 1.3 when the
peer can; TLS 1.2 is narrowed through the ``GRPC_SSL_CIPHER_SUITES`` environment variable,
which gRPC core reads exactly once, **when ``grpc`` is imported** (measured: setting it after
``import grpc`` has no effect). So this module must not import grpc, and the package
``__init__`` applies the policy before any of its modules does. TLS 1.3 suites are all AEAD
and are not affected by the variable.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("worker.grpc")

CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"

#: TLS 1.2 suites allowed: forward secrecy (ECDHE) and authenticated encryption (GCM, ChaCha20).
CIPHER_SUITES = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

_applied = False
_in_force = False


def apply_cipher_policy() -> None:
    """Set ``GRPC_SSL_CIPHER_SUITES`` unless the process environment chose suites already.

    An operator's own value is respected (to narrow it further) but logged, since it can also
    widen it. Remembers whether ``grpc`` was still unimported, i.e. whether the value counts.
    """
    global _applied, _in_force
    if _applied:
        return
    _applied = True
    current = os.environ.get(CIPHER_ENV)
    if current is None:
        os.environ[CIPHER_ENV] = CIPHER_SUITES
        _in_force = "grpc" not in sys.modules
        return
    _in_force = True  # inherited from the process environment: gRPC read it at import
    if current != CIPHER_SUITES:
        log.warning("%s is set by the environment to %r; using it as is", CIPHER_ENV, current)


def policy_in_force() -> bool:
    """True if gRPC in this process was initialized with the cipher variable set."""
    return _in_force
