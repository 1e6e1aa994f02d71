"""``worker certs``: files, modes, refusals and one-line errors, through the real command line."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from worker_core.cli import build_cli
from worker_plugins.certs import store
from worker_plugins.certs.commands import certs_group


def run(*args: str) -> Result:
    # The group directly: the whole `worker` program is exercised once below.
    return CliRunner().invoke(certs_group, list(args), catch_exceptions=False)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_writes_a_verifying_set(certs: Path) -> None:
    names = sorted(p.name for p in certs.iterdir())
    assert names == [
        "alice.key", "alice.pem", "bob.key", "bob.pem",
        "ca.key", "ca.pem", "server.key", "server.pem",
    ]  # fmt: skip
    ca = load_cert(certs / "ca.pem")
    for leaf in ("server", "alice", "bob"):
        cert = load_cert(certs / f"{leaf}.pem")
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key((certs / f"{leaf}.key").read_bytes(), None)
        assert key.public_key() == cert.public_key()
    assert usages(load_cert(certs / "server.pem")) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert usages(load_cert(certs / "alice.pem")) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_private_keys_are_0600_and_certificates_0644(certs: Path) -> None:
    for path in certs.iterdir():
        expected = 0o600 if path.suffix == ".key" else 0o644
        assert mode(path) == expected, path


def test_keys_are_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert run("init", "--dir", str(tmp_path)).exit_code == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / "ca.key") == 0o600
    assert mode(tmp_path / "server.key") == 0o600


def test_a_key_file_is_never_created_readable_by_others(tmp_path: Path) -> None:
    """Every open(2) that creates a key file passes O_EXCL and mode 0600 itself."""
    real_open = os.open
    created: list[tuple[str, int, int]] = []

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_CREAT:
            created.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    with mock.patch("worker_plugins.certs.store.os.open", spy):
        assert run("init", "--dir", str(tmp_path), "--client", "alice").exit_code == 0
    keys = [c for c in created if ".key." in os.path.basename(c[0])]
    assert len(keys) == 3
    for _, flags, file_mode in keys:
        assert flags & os.O_EXCL
        assert file_mode == 0o600
    # Nothing but the finished files is left: temporaries were renamed into place.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_init_refuses_to_replace_a_ca(certs: Path) -> None:
    before = (certs / "ca.pem").read_bytes()
    result = run("init", "--dir", str(certs))
    assert result.exit_code == 1
    assert "already holds a CA" in result.output
    assert "--force" in result.output
    assert (certs / "ca.pem").read_bytes() == before


def test_init_refuses_even_with_only_a_ca_key_left(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_text("x")
    result = run("init", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "already holds a CA" in result.output


def test_init_force_replaces_the_ca(certs: Path) -> None:
    before = load_cert(certs / "ca.pem")
    result = run("init", "--dir", str(certs), "--force")
    assert result.exit_code == 0, result.output
    after = load_cert(certs / "ca.pem")
    assert after.serial_number != before.serial_number
    load_cert(certs / "server.pem").verify_directly_issued_by(after)
    assert mode(certs / "ca.key") == 0o600


def test_init_options(tmp_path: Path) -> None:
    result = run(
        "init", "--dir", str(tmp_path), "--ca-name", "Acme CA", "--ca-days", "100",
        "--days", "10", "--host", "worker.example.com", "--host", "10.1.2.3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ca, server = load_cert(tmp_path / "ca.pem"), load_cert(tmp_path / "server.pem")
    assert ca.subject.rfc4514_string() == "CN=Acme CA"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 100
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days == 10
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["worker.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]


def test_client_issues_a_certificate_named_after_the_client(certs: Path) -> None:
    result = run("client", "--dir", str(certs), "carol", "dave@example.com")
    assert result.exit_code == 0, result.output
    assert "carol" in result.output
    for name in ("carol", "dave@example.com"):
        cert = load_cert(certs / f"{name}.pem")
        cert.verify_directly_issued_by(load_cert(certs / "ca.pem"))
        assert cert.subject.rfc4514_string() == f"CN={name}"
        assert usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert mode(certs / f"{name}.key") == 0o600


def test_client_refuses_to_replace_a_certificate_without_force(certs: Path) -> None:
    before = (certs / "alice.pem").read_bytes()
    result = run("client", "--dir", str(certs), "alice")
    assert result.exit_code == 1
    assert "alice.pem already exists (use --force to replace it)" in result.output
    assert (certs / "alice.pem").read_bytes() == before
    assert run("client", "--dir", str(certs), "--force", "alice").exit_code == 0
    assert (certs / "alice.pem").read_bytes() != before


def test_server_reissues_the_server_certificate(certs: Path) -> None:
    before = load_cert(certs / "server.pem")
    result = run("server", "--dir", str(certs), "--host", "example.net")
    assert result.exit_code == 0, result.output
    after = load_cert(certs / "server.pem")
    assert after.serial_number != before.serial_number
    after.verify_directly_issued_by(load_cert(certs / "ca.pem"))
    san = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.net"]
    assert mode(certs / "server.key") == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["client", "alice"],
            "no CA in {d}: {d}/ca.pem is missing (create one with `worker certs init --dir {d}`)",
        ),
        (["server"], "no CA in {d}: {d}/ca.pem is missing"),
        (["init", "--client", "../evil"], "bad client name '../evil'"),
        (["init", "--client", "server"], "bad client name 'server': it would overwrite server.pem"),
        (["init", "--host", "not a host"], "bad host 'not a host': not an IP address or a DNS name"),
    ],
)  # fmt: skip
def test_error_paths_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    directory = tmp_path / "empty"
    result = run(*args, "--dir", str(directory))
    assert result.exit_code == 1
    assert result.output.startswith(f"worker certs: error: {message.format(d=directory)}")
    assert result.output.count("\n") == 1  # one line, no traceback
    # Nothing was written: every name is checked before the first file.
    assert not directory.exists() or not any(directory.iterdir())


def test_a_bad_client_name_writes_nothing(certs: Path) -> None:
    result = run("client", "--dir", str(certs), "carol", "bad/name")
    assert result.exit_code == 1
    assert not (certs / "carol.pem").exists()


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("init", "--dir", str(blocker / "certs"))
    assert result.exit_code == 1
    assert (
        result.output
        == f"worker certs: error: cannot create directory {blocker}/certs: Not a directory\n"
    )


def test_write_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    # Root ignores mode bits, so make the rename fail instead: the target is a directory.
    (tmp_path / "x.key").mkdir()
    with pytest.raises(store.StoreError, match=r"cannot write .*x\.key"):
        store.write_file(tmp_path / "x.key", b"secret", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.key"]


def test_broken_ca_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("not a key")
    result = run("client", "--dir", str(tmp_path), "alice")
    assert result.exit_code == 1
    assert result.output == f"worker certs: error: {tmp_path}/ca.pem: not a PEM certificate\n"


def test_a_leaf_cannot_act_as_the_ca(certs: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "ca.pem").write_bytes((certs / "alice.pem").read_bytes())
    (fake / "ca.key").write_bytes((certs / "alice.key").read_bytes())
    result = run("client", "--dir", str(fake), "bob")
    assert result.exit_code == 1
    assert "is not a CA certificate" in result.output


def test_the_worker_program_has_the_certs_commands(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_cli(), ["certs", "init", "--dir", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ca.pem").exists()
