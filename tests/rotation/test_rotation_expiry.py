"""Expiry warnings: ``worker serve`` warns at start (printed and logged) when its certificate
or its CA expires within 30 days, and again every day; nothing is said about one that lasts."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

import pytest
from grpc_certs import TestPKI
from rotation_harness import make_rotation_pki, rotating_server, serial, server_certificate

from worker_plugins.certs import authority
from worker_plugins.certs.expiry import expiry_warning
from worker_plugins.grpc_transport.config import GrpcConfig
from worker_plugins.grpc_transport.server import GrpcListener
from worker_plugins.grpc_transport.tls import TlsFiles, load_material
from worker_plugins.serve.reload import watch_expiry

_DAY = datetime.timedelta(days=1)


def _warnings(stderr: str) -> tuple[list[str], list[str]]:
    """The printed warnings about expiry, and the logged ones."""
    lines = [line for line in stderr.splitlines() if " expires in " in line]
    printed = [line for line in lines if line.startswith("worker serve: warning: ")]
    logged = [line for line in lines if " WARNING worker.serve: " in line]
    return printed, logged


def test_a_server_certificate_expiring_in_10_days_is_warned_about_at_start(
    tmp_path: Path,
) -> None:
    # Ten days and an hour: "10 days" whatever the time the server takes to start.
    pki = make_rotation_pki(tmp_path / "pki", server_days=10 + 1 / 24)
    with rotating_server(tmp_path, pki=pki) as server:
        assert server.stop() == 0
    printed, logged = _warnings(server.stderr)
    expected = (
        f"grpc: the server certificate {pki.server_cert_path} (serial {serial(pki.server.cert):x}) "
        "expires in "
        "10 days, on "
    )
    assert len(printed) == 1 and printed[0].startswith(f"worker serve: warning: {expected}")
    assert printed[0].endswith(" UTC: renew it and send the server SIGHUP to load the new one")
    assert len(logged) == 1 and expected in logged[0]


def test_a_ca_expiring_within_30_days_is_warned_about(tmp_path: Path) -> None:
    ca = authority.make_ca("short-lived CA", days=20)
    directory = tmp_path / "pki"
    directory.mkdir()
    pki = TestPKI(ca, ca, server_certificate(ca, days=5), directory)
    pki.ca_path.write_bytes(ca.cert_pem)
    pki.server.write(directory, "server")
    with rotating_server(tmp_path, pki=pki) as server:
        assert server.stop() == 0
    printed, _ = _warnings(server.stderr)
    assert [line.split(" (serial")[0] for line in printed] == [
        f"worker serve: warning: grpc: the server certificate {pki.server_cert_path}",
        f"worker serve: warning: grpc: the CA certificate 'CN=short-lived CA' in {pki.ca_path}",
    ]
    assert " expires in 4 days, " in printed[0] and " expires in 19 days, " in printed[1]


def test_certificates_that_last_are_not_warned_about(tmp_path: Path) -> None:
    with rotating_server(tmp_path) as server:  # a CA for a year, a server for 90 days
        assert server.stop() == 0
    assert "warning" not in server.stderr.lower()


def test_the_warning_for_each_stage_of_a_certificate_life() -> None:
    ca = authority.make_ca("CA", days=400)
    cert = server_certificate(ca, days=60)
    leaf = authority.load_identity(cert.cert, cert.key, "leaf").cert
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    assert expiry_warning("it", leaf, end - 31 * _DAY) is None
    assert " expires in 30 days, " in (expiry_warning("it", leaf, end - 30 * _DAY) or "")
    assert " expires in 1 day, " in (expiry_warning("it", leaf, end - 1.5 * _DAY) or "")
    assert " expires in less than a day, " in (expiry_warning("it", leaf, end - _DAY / 2) or "")
    assert " expired on " in (expiry_warning("it", leaf, end) or "")
    assert " is not valid before " in (expiry_warning("it", leaf, start - _DAY) or "")


def test_the_daily_check_warns_again_and_sees_reloaded_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer serve runs, with the real listener's certificates, on a short interval."""
    pki = make_rotation_pki(tmp_path / "pki", server_days=3)
    files = TlsFiles(pki.ca_path, pki.server_cert_path, pki.server_key_path)
    listener = GrpcListener(GrpcConfig(), load_material(files))

    async def two_checks() -> None:
        task = asyncio.create_task(watch_expiry([listener], interval=0.01))
        try:
            await asyncio.wait_for(_until(lambda: len(_expiring(caplog)) >= 2), 20)
            # A renewed certificate, reloaded: the next checks say nothing.
            renewed = server_certificate(pki.ca, days=90)
            renewed.write(pki.directory, "server")
            listener.reload()
            caplog.clear()
            await asyncio.sleep(0.1)
        finally:
            task.cancel()

    with caplog.at_level(logging.WARNING, logger="worker.serve"):
        asyncio.run(two_checks())
    assert _expiring(caplog) == []


def _expiring(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if " expires in " in r.getMessage()]


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.01)
