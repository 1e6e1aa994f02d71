"""The TLS policy as a raw TLS client sees it: 1.2 only with ECDHE AEAD suites, nothing older.

gRPC reads GRPC_SSL_CIPHER_SUITES once, when ``grpc`` is imported, and this test process
imported it long before; so the server here is a real ``worker serve`` process. ChaCha20 is
in our list but not in grpc's default one, so accepting it shows our list is in force.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Iterator

import pytest
from grpc_harness import WORKER, ServeProcess, serve_process

#: A `worker` whose process imported grpc before the transport could set the policy: `serve`
#: must notice and re-execute itself.
WORKER_GRPC_FIRST = [
    sys.executable,
    "-c",
    "import grpc; from worker_core.cli import main; main()",
]


@pytest.fixture(scope="module", params=["plain", "grpc imported first"])
def harness(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServeProcess]:
    worker = WORKER if request.param == "plain" else WORKER_GRPC_FIRST
    with serve_process(tmp_path_factory.mktemp("pki"), worker=worker) as serve:
        yield serve
        serve.process.terminate()
        serve.process.wait(30)


def _handshake(
    harness: ServeProcess,
    tmp_path_factory: pytest.TempPathFactory,
    version: ssl.TLSVersion,
    ciphers: str | None,
) -> str:
    """Negotiate with the server; return the cipher chosen, or raise ssl.SSLError."""
    directory = tmp_path_factory.mktemp("client")
    cert, key = harness.pki.client("alice").write(directory, "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=harness.pki.ca.cert_pem.decode())
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", harness.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0]


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ],
)
def test_tls12_aead_suites_are_accepted(
    harness: ServeProcess, tmp_path_factory: pytest.TempPathFactory, cipher: str
) -> None:
    assert _handshake(harness, tmp_path_factory, ssl.TLSVersion.TLSv1_2, cipher) == cipher


@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"]
)
def test_tls12_cbc_or_non_ecdhe_suites_are_refused(
    harness: ServeProcess, tmp_path_factory: pytest.TempPathFactory, cipher: str
) -> None:
    with pytest.raises(ssl.SSLError):
        _handshake(harness, tmp_path_factory, ssl.TLSVersion.TLSv1_2, cipher)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_is_refused(harness: ServeProcess, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(harness, tmp_path_factory, ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0")


def test_tls13_is_negotiated_when_offered(
    harness: ServeProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert _handshake(harness, tmp_path_factory, ssl.TLSVersion.TLSv1_3, None).startswith("TLS_")
