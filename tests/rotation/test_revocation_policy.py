"""The pieces of revocation, directly: how serials and fingerprints are spelt, what the
policy's ``[revoked]`` accepts, the principal the gRPC transport makes, rbac's answers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from grpc_certs import client_identity

from worker_core.plugin import Action, Config, ConfigError, PermissionDenied, Principal
from worker_plugins.certs import authority
from worker_plugins.certs.fingerprint import normalize_serial, normalize_sha256
from worker_plugins.grpc_transport.auth import peer_principal
from worker_plugins.rbac.plugin import RbacPlugin
from worker_plugins.rbac.policy import load

SHA = "76:4A:8C:9A:97:27:50:D0:92:8B:CB:E5:1D:2B:28:FA:70:2D:29:C3:7A:38:D1:7F:A6:15:67:6D:97:92:F1:A0"


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("0A1B", "a1b"), ("0a:1b", "a1b"), (" 00ff ", "ff"), ("4162AA17", "4162aa17"), ("0", "0")],
)
def test_serials_are_spelt_one_way(written: str, canonical: str) -> None:
    assert normalize_serial(written) == canonical


@pytest.mark.parametrize("written", ["", "0x1a", "xyz", "0a::1b", ":0a", "1" * 41, "0a 1b"])
def test_what_is_not_a_serial(written: str) -> None:
    with pytest.raises(ValueError, match="not a certificate serial number"):
        normalize_serial(written)


def test_fingerprints_are_spelt_one_way() -> None:
    assert normalize_sha256(SHA) == SHA.replace(":", "").lower()
    assert normalize_sha256(SHA.replace(":", "").lower()) == SHA.replace(":", "").lower()
    for bad in (SHA[:-3], SHA + ":00", SHA.replace("7", "g"), "SHA256:" + SHA):
        with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
            normalize_sha256(bad)


def test_the_transport_names_the_certificate_in_the_principal() -> None:
    ca = authority.make_ca("CA", days=30)
    identity = client_identity(ca, "carol")
    cert = x509.load_pem_x509_certificate(identity.cert)
    principal = peer_principal({"x509_pem_cert": [identity.cert]})
    # Field by field: whether Principal's equality covers the certificate is another matter.
    assert (principal.name, principal.cert_serial, principal.cert_sha256) == (
        "carol",
        f"{cert.serial_number:x}",
        cert.fingerprint(hashes.SHA256()).hex(),
    )


def _policy(tmp_path: Path, revoked: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[roles.op]\npermissions = ["submit", "read:own"]\n[users]\nalice = ["op"]\n{revoked}'
    )
    return path


def test_the_policy_keeps_revoked_entries_canonical(tmp_path: Path) -> None:
    policy = load(_policy(tmp_path, f'[revoked]\nserials = ["0A:1B"]\nsha256 = ["{SHA}"]\n'))
    assert policy.revoked_serials == {"a1b"}
    assert policy.revoked_sha256 == {SHA.replace(":", "").lower()}
    assert policy.is_revoked(Principal("alice", cert_serial="a1b"))
    assert policy.is_revoked(Principal("bob", cert_sha256=SHA.replace(":", "").lower()))
    assert not policy.is_revoked(Principal("alice", cert_serial="a1c"))
    assert not policy.is_revoked(Principal("alice"))  # no certificate: nothing to revoke


def test_a_malformed_entry_is_a_policy_error_with_its_line(tmp_path: Path) -> None:
    path = _policy(tmp_path, '[revoked]\nserials = ["0a1b", 42]\nsha256 = "AB"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).splitlines() == [
        f"{path}:6: revoked.serials[1]: expected a string of hex digits, got int 42",
        f"{path}:7: revoked.sha256: must be a list, e.g. [\"76:4A:8C:...\"], got str 'AB'",
    ]


def _configured(tmp_path: Path, revoked: str) -> tuple[RbacPlugin, Path]:
    path = _policy(tmp_path, revoked)
    plugin = RbacPlugin()
    plugin.configure(Config(plugins={"rbac": {"policy": str(path)}}))
    return plugin, path


def test_rbac_refuses_a_revoked_principal_everything_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin, _ = _configured(tmp_path, '[revoked]\nserials = ["0a1b"]\n')
    revoked = Principal("alice", cert_serial="a1b", cert_sha256="00" * 32)
    with caplog.at_level(logging.WARNING, logger="worker.rbac"):
        for action in Action:
            with pytest.raises(PermissionDenied, match="certificate of 'alice' is revoked"):
                plugin.authorize(revoked, action, None)
    assert [r.getMessage() for r in caplog.records] == [
        f"refused 'alice': its certificate is revoked (serial a1b, sha256 {'00' * 32})"
    ]
    assert plugin.authorize(Principal("alice", cert_serial="a1c"), Action.SUBMIT, None) is True


def test_rbac_reload_keeps_the_policy_in_force_when_the_new_one_fails(tmp_path: Path) -> None:
    plugin, path = _configured(tmp_path, "")
    alice = Principal("alice", cert_serial="a1b")
    assert plugin.authorize(alice, Action.SUBMIT, None) is True
    path.write_text(path.read_text() + '[revoked]\nserials = ["a1b", "nope"]\n')
    with pytest.raises(ConfigError, match=r"revoked\.serials\[1\]: not a certificate serial"):
        plugin.reload()
    assert plugin.authorize(alice, Action.SUBMIT, None) is True
    path.write_text(path.read_text().replace(', "nope"', ""))
    assert plugin.reload() == f"policy {path}: 1 user, 1 revoked certificate"
    with pytest.raises(PermissionDenied):
        plugin.authorize(alice, Action.SUBMIT, None)
