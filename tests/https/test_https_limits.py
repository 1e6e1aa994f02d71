"""Caps: request bodies and headers, slow clients (headers, bodies, readers), and streams
per client. A server with small caps, so each is reached quickly; every wait is bounded."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from grpc_harness import wait_for
from https_harness import CurlFailed, HttpsServer, curl_stream, https_serve, shell

CAPS = {
    "max_body_bytes": 4096,
    "max_header_bytes": 1024,
    "max_headers": 20,
    "idle_timeout": 1.0,
    "body_timeout": 1.0,
    "write_timeout": 1.0,
    "max_streams_per_client": 2,
    "heartbeat_seconds": 1.0,
    "handshake_timeout": 1.0,
}

#: Bound on waiting for the server to act on a timeout of about a second.
ACT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    with https_serve(tmp_path_factory.mktemp("limits"), https=CAPS) as running:
        yield running


def tls_socket(server: HttpsServer, cn: str = "alice") -> ssl.SSLSocket:
    """A raw TLS connection as ``cn``, for clients curl cannot play (slow, silent)."""
    context = ssl.create_default_context(cafile=str(server.pki.ca_path))
    cert, key = server.cert(cn)
    context.load_cert_chain(cert, key)
    raw = socket.create_connection(("127.0.0.1", server.https_port), timeout=ACT_TIMEOUT)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_until_closed(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the timeout)."""
    parts = []
    deadline = time.monotonic() + ACT_TIMEOUT
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not data:
            break
        parts.append(data)
    else:
        raise AssertionError("the server did not close the connection")
    return b"".join(parts)


def test_a_body_over_the_cap_is_413(server: HttpsServer) -> None:
    big = {"spec": {"command": "/bin/echo", "args": ["x" * 5000]}}
    reply = server.call("alice", "POST", "/v1/jobs", big)
    assert reply.status == 413 and reply.code == "RESOURCE_EXHAUSTED"
    assert "4096" in reply.json()["message"]
    # With Expect: 100-continue it is refused before the body is sent.
    early = server.curl(
        "alice", "/v1/jobs", method="POST", body=big, headers=["Expect: 100-continue"]
    )
    assert early.status == 413 and early.code == "RESOURCE_EXHAUSTED"
    # Chunked, with no length announced: refused once the cap is passed.
    chunked = server.curl(
        "alice", "/v1/jobs", method="POST", body=big, headers=["Transfer-Encoding: chunked"]
    )
    assert chunked.status == 413 and chunked.code == "RESOURCE_EXHAUSTED"
    # Just under the cap is fine.
    fits = {"spec": {"command": "/bin/echo", "args": ["x" * 3000]}}
    assert server.call("alice", "POST", "/v1/jobs", fits).status == 201


def test_headers_over_the_caps_are_refused(server: HttpsServer) -> None:
    long = server.curl("alice", "/v1/me", headers=["X-Long: " + "y" * 2000])
    assert long.status in (400, 431)
    many = server.curl("alice", "/v1/me", headers=[f"X-H{i}: v" for i in range(30)])
    assert many.status in (400, 431)
    path = server.curl("alice", "/v1/jobs?name=" + "z" * 2000)
    assert path.status in (400, 414)
    assert server.curl("alice", "/v1/me").status == 200


def test_a_client_that_never_starts_its_handshake_is_disconnected(server: HttpsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=ACT_TIMEOUT) as raw:
        assert raw.recv(1024) == b""  # closed by the server, a handshake_timeout later


def test_a_client_that_never_finishes_its_headers_is_disconnected(server: HttpsServer) -> None:
    with tls_socket(server) as sock:
        sock.sendall(b"GET /v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert read_until_closed(sock) == b""


def test_a_client_that_never_finishes_its_body_gets_408(server: HttpsServer) -> None:
    with tls_socket(server) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'X-Worker-Client: tests\r\nContent-Length: 200\r\n\r\n{"spec":'
        )
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"DEADLINE_EXCEEDED" in answer


def test_streams_per_client_are_capped(server: HttpsServer) -> None:
    job = server.submit("alice", shell("echo go; sleep 60"))
    path = f"/v1/jobs/{job['id']}/output?follow=true"
    with curl_stream(server, "alice", path) as one, curl_stream(server, "alice", path) as two:
        one.wait_for(lambda got: got == b"go\n")
        two.wait_for(lambda got: got == b"go\n")
        third = server.curl("alice", path)
        assert third.status == 429 and third.code == "RESOURCE_EXHAUSTED"
        events = server.curl("alice", f"/v1/jobs/{job['id']}/events")
        assert events.status == 429
        # Other calls go on, and other clients have slots of their own.
        assert server.curl("alice", f"/v1/jobs/{job['id']}").status == 200
        with pytest.raises(CurlFailed):  # admin's stream is open (it follows) until curl's bound
            server.curl("admin", path, timeout=2)
    # A client that went away gave its slot back.
    wait_for(
        lambda: server.curl("alice", f"/v1/jobs/{job['id']}/output").status == 200,
        ACT_TIMEOUT,
        what="the slots to be freed",
    )
    server.call("alice", "POST", f"/v1/jobs/{job['id']}/stop", {"force": True})


def test_a_follower_that_reads_nothing_is_dropped(server: HttpsServer) -> None:
    # 64 MiB of output: far more than the socket buffers between here and the server hold.
    job = server.submit("alice", shell("head -c 67108864 /dev/zero"), waitSeconds=60)
    request = f"GET /v1/jobs/{job['id']}/output HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    probe = f"/v1/jobs/{job['id']}/output?start=end"
    with tls_socket(server) as first, tls_socket(server) as second:
        for sock in (first, second):
            sock.sendall(request)
        # Both slots are taken by clients that read nothing...
        wait_for(
            lambda: server.curl("alice", probe).status == 429,
            ACT_TIMEOUT,
            what="the silent followers to hold both slots",
        )
        # ... until the server drops them, a write_timeout after their buffers filled.
        wait_for(
            lambda: server.curl("alice", probe).status == 200,
            ACT_TIMEOUT,
            what="the server to drop the silent followers",
        )
        assert read_until_closed(first).startswith(b"HTTP/1.1 200")
    # A fresh follower reads every byte.
    assert len(server.curl("alice", f"/v1/jobs/{job['id']}/output?stream=stdout").body) == 64 << 20
