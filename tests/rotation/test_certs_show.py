"""``worker certs show``: a certificate's names, serial, fingerprint, validity and days left,
run as the real program, checked against what ``cryptography`` reads from the same files."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from grpc_harness import WORKER
from rotation_harness import server_certificate

from worker_plugins.certs import authority
from worker_plugins.certs.fingerprint import normalize_serial, normalize_sha256

CERTS = Path(__file__).resolve().parents[2] / "certs"
TIMEOUT = 60.0


def show(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKER, "certs", "show", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def blocks(stdout: str) -> dict[str, dict[str, str]]:
    """``{title: {field: value}}`` of the printed blocks."""
    parsed: dict[str, dict[str, str]] = {}
    for block in stdout.strip().split("\n\n"):
        title, *lines = block.splitlines()
        assert title.endswith(":"), title
        fields = dict(line.strip().split(": ", 1) for line in lines)
        parsed[title[:-1]] = {key.rstrip(":"): value.strip() for key, value in fields.items()}
    return parsed


@pytest.mark.parametrize("name", ["ca", "server", "alice"])
def test_the_development_certificates(name: str) -> None:
    path = CERTS / f"{name}.pem"
    result = show(str(path))
    assert result.returncode == 0, result.stderr
    [(title, fields)] = blocks(result.stdout).items()
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    assert title == str(path)
    assert fields["subject"] == cert.subject.rfc4514_string()
    assert fields["issuer"] == "CN=worker development CA"
    assert fields["serial"] == f"{cert.serial_number:x}"
    assert fields["sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert fields["not before"] == f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
    assert fields["not after"] == f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    # Whole days; the day may turn between the program's clock and this one.
    left = (cert.not_valid_after_utc - now).days
    assert int(fields["days left"]) in (left, left - 1)
    assert fields["usage"] == {"ca": "CA", "server": "serverAuth", "alice": "clientAuth"}[name]
    if name == "server":
        assert fields["names"] == "localhost, 127.0.0.1, ::1"
    # Spelt as the policy's [revoked] takes them.
    assert normalize_serial(fields["serial"]) == fields["serial"]
    assert normalize_sha256(fields["sha256"]) == fields["sha256"]


def test_without_a_file_every_certificate_of_the_directory() -> None:
    result = show("--dir", str(CERTS))
    assert result.returncode == 0, result.stderr
    assert sorted(Path(title).name for title in blocks(result.stdout)) == sorted(
        p.name for p in CERTS.glob("*.pem")
    )


def test_a_file_of_several_certificates_and_the_days_left_of_short_lived_ones(
    tmp_path: Path,
) -> None:
    ca = authority.make_ca("CA", days=400)
    bundle = tmp_path / "bundle.pem"
    soon, gone = server_certificate(ca, days=10.5), server_certificate(ca, days=-3.5)
    bundle.write_bytes(soon.cert + gone.cert)
    result = show(str(bundle))
    assert result.returncode == 0, result.stderr
    shown = blocks(result.stdout)
    assert list(shown) == [f"{bundle} [1]", f"{bundle} [2]"]
    assert shown[f"{bundle} [1]"]["days left"] == "10 (expires within 30 days: renew it)"
    assert shown[f"{bundle} [2]"]["days left"] == "0 (expired 3 days ago)"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a certificate\n", "holds no PEM certificate"), (None, "does not exist")],
    ids=["not-pem", "missing"],
)
def test_a_bad_file_is_one_line_and_nothing_printed(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    good, bad = CERTS / "ca.pem", tmp_path / "bad.pem"
    if content is not None:
        bad.write_bytes(content)
    result = show(str(good), str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"worker certs: error: {bad} {message}\n"
