"""The TLS endpoint of a real ``worker serve``, probed with a real TLS client (python ``ssl``).

``tests/test_grpc_tls.py`` checks a few suites against the ECDSA server; this module adds:

- every TLS 1.2 suite the local OpenSSL can offer, one at a time: the server accepts exactly
  the ECDHE + AEAD ones, and each refusal comes from the server (an alert), not from a client
  that had nothing to offer;
- an RSA server key, so the ECDHE-RSA suites (and the RSA key-exchange ones) are tested too;
- TLS 1.0 and 1.1, offered for real (shown against a local permissive server first), refused;
- a client without a certificate, refused in the handshake.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_certs import Identity, TestPKI, make_ca, server_identity
from reliability_harness import ServerProcess, worker_serve

#: The TLS 1.2 suites worker allows (cipher_policy.CIPHER_SUITES), by server key type.
ALLOWED = {
    "ecdsa": {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    },
    "rsa": {
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
    },
}

#: What OpenSSL reports when the client itself had no suite or version to offer.
CLIENT_SIDE = ("NO_CIPHERS_AVAILABLE", "NO_PROTOCOLS_AVAILABLE", "NO_SUITABLE")


def _rsa_server(ca_pki: TestPKI) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    ca = ca_pki.ca
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Identity(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@pytest.fixture(scope="module", params=["ecdsa", "rsa"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerProcess]]:
    directory = tmp_path_factory.mktemp(f"tls-{request.param}")
    ca = make_ca()
    pki = TestPKI(ca, make_ca("some other CA"), server_identity(ca), directory)
    if request.param == "rsa":
        pki = TestPKI(ca, pki.other_ca, _rsa_server(pki), directory)
    pki.ca_path.write_bytes(ca.cert_pem)
    pki.server.write(directory, "server")
    with worker_serve(directory / "run", pki=pki) as server:
        yield request.param, server


def _client_context(
    server: ServerProcess,
    directory: Path,
    version: ssl.TLSVersion,
    ciphers: str | None = None,
    with_certificate: bool = True,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=server.pki.ca.cert_pem.decode())
    if with_certificate:
        cert, key = server.identity("alice").write(directory, "alice")
        context.load_cert_chain(cert, key)
    context.minimum_version = version
    context.maximum_version = version
    # Level 0, so the client really offers what is asked; the refusal must be the server's.
    context.set_ciphers(f"{ciphers or 'DEFAULT'}:@SECLEVEL=0")
    context.set_alpn_protocols(["h2"])
    return context


def _handshake(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """(version, cipher) negotiated; raises ssl.SSLError or OSError if refused.

    Reads once after the handshake: a TLS 1.3 server rejects a client certificate only after
    the client's side of the handshake is done, with an alert the first read receives.
    """
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\4\0\0\0\0\0")
        if not tls.recv(1024):
            raise ConnectionResetError("closed by the server")
        cipher = tls.cipher()
        version = tls.version()
        assert cipher is not None and version is not None
        return version, cipher[0]


def _offerable_tls12_suites() -> list[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return sorted(
        c["name"]
        for c in context.get_ciphers()
        if c["protocol"] == "TLSv1.2" and "PSK" not in c["name"] and "SRP" not in c["name"]
    )


def test_every_tls12_suite_offered_alone_only_ecdhe_aead_is_accepted(
    server: tuple[str, ServerProcess], tmp_path: Path
) -> None:
    kind, serve = server
    suites = _offerable_tls12_suites()
    assert len(suites) > 20, suites  # the local OpenSSL offers the usual zoo
    accepted, refused = set(), {}
    for suite in suites:
        context = _client_context(serve, tmp_path, ssl.TLSVersion.TLSv1_2, suite)
        try:
            version, cipher = _handshake(serve.port, context)
        except (ssl.SSLError, OSError) as exc:
            refused[suite] = str(exc)
            continue
        assert (version, cipher) == ("TLSv1.2", suite)
        accepted.add(suite)
    print(f"\n{kind} server: {len(suites)} TLS 1.2 suites tried, accepted {sorted(accepted)}")
    assert accepted == ALLOWED[kind]
    for suite, reason in refused.items():
        assert not any(mark in reason for mark in CLIENT_SIDE), f"{suite}: {reason}"


@pytest.mark.parametrize(
    "suite",
    [
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA",
        "AES128-SHA256",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-RSA-AES256-SHA384",
        "AES128-GCM-SHA256",  # AEAD but no forward secrecy (RSA key exchange)
        "DHE-RSA-AES128-GCM-SHA256",  # AEAD, finite-field DH: not in the list
    ],
)
def test_named_non_aead_or_non_ecdhe_suites_are_refused(
    server: tuple[str, ServerProcess], tmp_path: Path, suite: str
) -> None:
    _, serve = server
    context = _client_context(serve, tmp_path, ssl.TLSVersion.TLSv1_2, suite)
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(serve.port, context)


def test_tls12_aead_and_tls13_are_negotiated(
    server: tuple[str, ServerProcess], tmp_path: Path
) -> None:
    kind, serve = server
    for suite in sorted(ALLOWED[kind]):
        context = _client_context(serve, tmp_path, ssl.TLSVersion.TLSv1_2, suite)
        assert _handshake(serve.port, context) == ("TLSv1.2", suite)
    version, cipher = _handshake(
        serve.port, _client_context(serve, tmp_path, ssl.TLSVersion.TLSv1_3)
    )
    assert version == "TLSv1.3" and cipher.startswith("TLS_")


@contextlib.contextmanager
def _permissive_server(serve: ServerProcess, directory: Path) -> Iterator[int]:
    """A local python TLS server that accepts anything down to TLS 1.0 (a positive control)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = serve.pki.server.write(directory, "permissive")
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(b"ok")

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1.* is deprecated:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_are_refused_by_the_server(
    server: tuple[str, ServerProcess], tmp_path: Path, version: str
) -> None:
    _, serve = server
    tls_version = getattr(ssl.TLSVersion, version)
    context = _client_context(serve, tmp_path, tls_version)
    # The control: this client really speaks the old version (else the test proves nothing).
    try:
        with _permissive_server(serve, tmp_path) as port:
            negotiated, _ = _handshake(port, context)
    except (ssl.SSLError, OSError) as exc:
        pytest.skip(f"the local OpenSSL cannot offer {version} even at @SECLEVEL=0: {exc}")
    assert negotiated == version.replace("_", ".")
    with pytest.raises(ssl.SSLError) as info:
        _handshake(serve.port, context)
    reason = str(info.value)
    print(f"\n{version}: {reason}")
    # gRPC's BoringSSL answers an old ClientHello by closing the connection (EOF) or with a
    # protocol_version alert; either way it is the server's refusal (the control above shows
    # the client offered the version), never the client's own "nothing to offer".
    assert not any(mark in reason for mark in CLIENT_SIDE), reason


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_a_client_without_a_certificate_is_refused_in_the_handshake(
    server: tuple[str, ServerProcess], tmp_path: Path, version: str
) -> None:
    _, serve = server
    context = _client_context(
        serve, tmp_path, getattr(ssl.TLSVersion, version), with_certificate=False
    )
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(serve.port, context)
