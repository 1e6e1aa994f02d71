"""TLS as a client meets it: TLS 1.3 only by default (``openssl s_client``), TLS 1.2 with
ECDHE+AEAD only when allowed, and no request without a usable client certificate (curl)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from grpc_certs import issue
from https_harness import CurlFailed, HttpsServer, https_serve

if shutil.which("openssl") is None:  # pragma: no cover - CI installs it
    pytest.skip("openssl is not installed (apt-get install -y openssl)", allow_module_level=True)


@pytest.fixture(scope="module")
def tls12_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    with https_serve(tmp_path_factory.mktemp("tls12"), https={"min_tls": "1.2"}) as running:
        yield running


def s_client(server: HttpsServer, *args: str, cn: str | None = "alice") -> tuple[int, str]:
    """``openssl s_client`` connecting and hanging up at once: its exit code and output."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.https_port}"]
    argv += ["-CAfile", str(server.pki.ca_path), "-verify_return_error", *args]
    if cn is not None:
        cert, key = server.cert(cn)
        argv += ["-cert", str(cert), "-key", str(key)]
    done = subprocess.run(
        argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, timeout=30
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def _refused(code: int, output: str) -> None:
    # asyncio's TLS layer closes the connection on a failed handshake without sending the
    # alert OpenSSL wrote (the client reads an EOF): refused, however it is worded.
    assert code != 0, output
    assert "Cipher is (NONE)" in output or "alert" in output, output


def test_tls12_is_refused_by_default(server: HttpsServer) -> None:
    _refused(*s_client(server, "-tls1_2"))


def test_tls13_is_accepted(server: HttpsServer) -> None:
    code, output = s_client(server, "-tls1_3")
    assert code == 0, output
    assert "TLSv1.3" in output
    # curl negotiates it too, and the request goes through.
    assert server.curl("alice", "/v1/me", extra=["--tlsv1.3"]).status == 200


def test_a_client_without_a_certificate_is_refused(server: HttpsServer) -> None:
    with pytest.raises(CurlFailed) as caught:
        server.curl(None, "/v1/me")
    # No HTTP answer at all: the TLS session ends before any request is read.
    assert caught.value.returncode in (35, 52, 56), caught.value.stderr


@pytest.mark.parametrize("kind", ["foreign", "expired", "server_only"])
def test_a_certificate_the_ca_did_not_issue_for_clients_is_refused(
    server: HttpsServer, kind: str
) -> None:
    pki = server.pki
    identity = {
        "foreign": pki.foreign_client,
        "expired": pki.expired_client,
        "server_only": pki.server_only_client,
    }[kind](f"alice-{kind}")
    cn = f"alice-{kind}"
    server.cert(cn, identity)
    with pytest.raises(CurlFailed):
        server.curl(cn, "/v1/me")


def test_a_certificate_that_states_no_usage_is_refused_by_the_server(server: HttpsServer) -> None:
    # X.509 reads "no extended key usage" as "any", and OpenSSL lets it through; the transport
    # requires clientAuth to be stated, as `worker certs` always does.
    server.cert("alice-no-eku", issue(server.pki.ca, "alice", usages=()))
    reply = server.curl("alice-no-eku", "/v1/me")
    assert reply.status == 401 and reply.code == "UNAUTHENTICATED"
    assert "client authentication" in reply.json()["message"]


def test_tls12_when_allowed_is_ecdhe_with_aead_only(tls12_server: HttpsServer) -> None:
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        code, output = s_client(tls12_server, "-tls1_2", "-cipher", cipher)
        assert code == 0, (cipher, output)
        assert cipher in output
    for cipher in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA"):  # CBC: refused
        _refused(*s_client(tls12_server, "-tls1_2", "-cipher", cipher))
    assert tls12_server.curl("alice", "/v1/me", extra=["--tls-max", "1.2"]).status == 200
    code, output = s_client(tls12_server, "-tls1_3")
    assert code == 0 and "TLSv1.3" in output
