"""``worker_plugins.certs.authority``: what each certificate may do, and a real mTLS handshake."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path
from typing import TypeVar, cast

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from worker_plugins.certs import authority
from worker_plugins.certs.authority import CertificateError, Issued

HANDSHAKE_TIMEOUT = 10.0


T = TypeVar("T", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return cert.extensions.get_extension_for_class(kind)


def test_ca_can_sign_leaf_certificates_only(ca: Issued) -> None:
    constraints = _ext(ca.cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca and constraints.value.path_length == 0
    usage = _ext(ca.cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ca.cert.verify_directly_issued_by(ca.cert)  # self-signed
    assert ca.common_name == "test CA"


def test_default_lifetimes() -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca = authority.make_ca()
    leaf = authority.issue_client(ca, "alice")
    assert (ca.expires - now).days in range(5 * 365 - 1, 5 * 365 + 2)
    assert (leaf.expires - now).days in range(364, 366)


def test_server_certificate_names_and_usage(ca: Issued) -> None:
    server = authority.issue_server(ca, ["localhost", "127.0.0.1", "::1", "Worker.Example.com"])
    server.cert.verify_directly_issued_by(ca.cert)
    san = _ext(server.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "worker.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(_ext(server.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = _ext(server.cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not _ext(server.cert, x509.BasicConstraints).value.ca
    assert server.common_name == "localhost"


def test_client_certificate_is_its_name_and_client_auth_only(ca: Issued) -> None:
    client = authority.issue_client(ca, "alice@example.com")
    client.cert.verify_directly_issued_by(ca.cert)
    assert client.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "alice@example.com"
    )
    assert list(_ext(client.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        client.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    aki = _ext(client.cert, x509.AuthorityKeyIdentifier).value
    ski = _ext(ca.cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_a_leaf_never_outlives_its_ca(ca: Issued) -> None:
    assert authority.issue_client(ca, "long", days=10_000).expires == ca.expires


def test_a_certificate_from_another_ca_does_not_verify(ca: Issued) -> None:
    other = authority.make_ca("other", days=30)
    client = authority.issue_client(other, "mallory")
    with pytest.raises(ValueError):
        client.cert.verify_directly_issued_by(ca.cert)


@pytest.mark.parametrize(
    "name", ["", "-rf", ".hidden", "a/b", "../x", "a b", "x" * 65, "ca", "SERVER", "é"]
)
def test_bad_client_names_are_refused(ca: Issued, name: str) -> None:
    with pytest.raises(CertificateError, match="bad client name"):
        authority.issue_client(ca, name)


@pytest.mark.parametrize("host", ["", "a b", "-x.com", "x..com", "*.*.com", "a_b.com", "x" * 64])
def test_bad_hosts_are_refused(ca: Issued, host: str) -> None:
    with pytest.raises(CertificateError, match="bad host"):
        authority.issue_server(ca, [host])


def test_a_leaf_is_not_a_ca(ca: Issued) -> None:
    leaf = authority.issue_client(ca, "alice")
    with pytest.raises(CertificateError, match="not a CA certificate"):
        authority.issue_client(leaf, "bob")


def test_a_ca_key_must_match_its_certificate(ca: Issued) -> None:
    other = authority.make_ca("other", days=30)
    with pytest.raises(CertificateError, match="does not belong"):
        authority.issue_client(Issued(ca.cert, other.key), "bob")


def test_zero_days_is_refused(ca: Issued) -> None:
    with pytest.raises(CertificateError, match="at least 1 day"):
        authority.issue_client(ca, "alice", days=0)


# -------------------------------------------------------------------------------------------
# real TLS: the files as written by the store (the ``pki`` fixture), loaded by OpenSSL
# -------------------------------------------------------------------------------------------


def _handshake(pki: Path, client: str, host: str, family: socket.AddressFamily) -> str:
    """Run a TLS handshake between a server and a client context; return the client's CN.

    The server requires a client certificate from the CA, as the gRPC server does; OpenSSL
    also checks that it carries clientAuth (and the server's, serverAuth).
    """
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    server_ctx.load_verify_locations(pki / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(pki / "ca.pem")
    client_ctx.load_cert_chain(pki / f"{client}.pem", pki / f"{client}.key")

    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.settimeout(HANDSHAKE_TIMEOUT)
    listener.bind((host, 0))
    listener.listen(1)
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(HANDSHAKE_TIMEOUT)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                assert peer is not None
                # getpeercert()'s subject: a tuple of RDNs, each a tuple of (name, value).
                rdns = cast("tuple[tuple[tuple[str, str], ...], ...]", peer["subject"])
                subject = {name: value for rdn in rdns for name, value in rdn}
                result["cn"] = subject["commonName"]
                tls.sendall(b"ok")
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_error: Exception | None = None
    try:
        with (
            socket.create_connection(listener.getsockname()[:2], timeout=HANDSHAKE_TIMEOUT) as raw,
            client_ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.recv(2) == b"ok"
    except (ssl.SSLError, ConnectionError) as exc:
        client_error = exc  # the server's alert; the server's own error says why
    finally:
        thread.join(HANDSHAKE_TIMEOUT)
        listener.close()
    if "error" in result:
        raise Refused(str(result["error"]))
    if client_error is not None:
        raise client_error
    return str(result["cn"])


class Refused(Exception):
    """The server refused the client; the message is the server side's TLS error."""


def test_mutual_tls_handshake_over_ipv4(pki: Path) -> None:
    # server_hostname="127.0.0.1": the client checks the IP SAN.
    assert _handshake(pki, "alice", "127.0.0.1", socket.AF_INET) == "alice"


def test_mutual_tls_handshake_over_ipv6(pki: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert _handshake(pki, "alice", "::1", socket.AF_INET6) == "alice"


def test_a_client_from_another_ca_is_refused(pki: Path) -> None:
    with pytest.raises(Refused, match="certificate verify failed"):
        _handshake(pki, "mallory", "127.0.0.1", socket.AF_INET)


def test_the_server_certificate_cannot_serve_as_a_client_certificate(pki: Path) -> None:
    # Same CA, but serverAuth only: OpenSSL's "ssl_client" purpose check refuses it.
    with pytest.raises(Refused, match="unsuitable certificate purpose"):
        _handshake(pki, "server", "127.0.0.1", socket.AF_INET)
