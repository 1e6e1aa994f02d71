"""The development certificates committed in ``certs/``: they chain, fit together, and last.

Fails a year before anything expires, leaving time to renew them (see certs/README.md).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

CERTS = Path(__file__).resolve().parents[2] / "certs"
CLIENTS = ("admin", "operator", "viewer", "alice", "bob")
MARGIN = datetime.timedelta(days=365)


def load(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((CERTS / f"{name}.pem").read_bytes())


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.mark.parametrize("name", ["ca", "server", *CLIENTS])
def test_not_expiring_within_a_year_and_key_matches(name: str) -> None:
    cert = load(name)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now
    assert cert.not_valid_after_utc - now > MARGIN, (
        f"certs/{name}.pem expires on {cert.not_valid_after_utc:%Y-%m-%d}: renew the "
        "development set (certs/README.md)"
    )
    key = serialization.load_pem_private_key((CERTS / f"{name}.key").read_bytes(), None)
    assert key.public_key() == cert.public_key()


def test_ca_is_a_ca() -> None:
    ca = load("ca")
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_server_certificate_is_for_localhost() -> None:
    server = load("server")
    server.verify_directly_issued_by(load("ca"))
    assert usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("name", CLIENTS)
def test_client_certificates_name_their_user(name: str) -> None:
    cert = load(name)
    cert.verify_directly_issued_by(load("ca"))
    assert cert.subject.rfc4514_string() == f"CN={name}"
    assert usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_every_client_is_in_the_example_policy() -> None:
    from worker_core._model import Principal
    from worker_plugins.rbac.policy import load as load_policy

    policy = load_policy(CERTS.parent / "examples" / "policy.toml")
    for name in CLIENTS:
        assert policy.permissions(Principal(name)), name
