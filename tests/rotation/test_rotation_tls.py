"""SIGHUP reloads the server's certificate, key and CA on a real ``worker serve``: new
connections get the new ones, open streams and running jobs go on, bad files change nothing."""

from __future__ import annotations

import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_certs import client_identity
from grpc_harness import RPC_TIMEOUT, shell, wait_for
from rotation_harness import (
    EXIT_TIMEOUT,
    Rotating,
    replace_file,
    rotating_server,
    serial,
    server_certificate,
)

from worker_plugins.certs import authority
from worker_plugins.grpc_transport import worker_pb2 as pb


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Rotating]:
    with rotating_server(tmp_path) as running:
        yield running


def test_a_new_certificate_reaches_new_connections_while_a_tail_and_its_job_go_on(
    server: Rotating, tmp_path: Path
) -> None:
    alice = server.pki.client("alice")
    old = serial(server.pki.server.cert)
    assert server.served_certificate(alice).serial_number == old
    go, end = tmp_path / "go", tmp_path / "end"
    stub = server.stub(alice)
    script = (
        f"echo before; while [ ! -e {go} ]; do sleep 0.02; done; echo after; "
        f"while [ ! -e {end} ]; do sleep 0.02; done; echo done"
    )
    job = stub.Submit(pb.SubmitRequest(spec=shell(script)), timeout=RPC_TIMEOUT).job
    tail = stub.Tail(pb.TailRequest(job_id=job.id), timeout=120)
    first = next(tail)
    assert first.data == b"before\n"

    new = server_certificate(server.pki.ca)
    replace_file(server.pki.server_key_path, new.key)
    replace_file(server.pki.server_cert_path, new.cert)
    lines = server.hup("grpc", "rbac")
    assert f"certificate serial {serial(new.cert):x}" in lines["grpc"], lines

    # New connections: the new certificate, both to a bare handshake and to a gRPC client.
    assert server.served_certificate(alice).serial_number == serial(new.cert)
    fresh = server.stub(alice)
    assert job.id in [j.id for j in fresh.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs]
    # The open stream still delivers live output, and the job it follows still runs.
    assert fresh.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job.state == (
        pb.JOB_STATE_RUNNING
    )
    go.touch()
    assert next(tail).data == b"after\n"
    end.touch()
    rest = b"".join(message.data for message in tail)
    assert rest == b"done\n"
    assert tail.code() == grpc.StatusCode.OK
    ended = stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job
    assert (ended.state, ended.exit_code) == (pb.JOB_STATE_ENDED, 0)
    # The connection opened before the reload serves calls as before.
    assert stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job.id == job.id
    assert server.stop() == 0


def _truncated(pem: bytes) -> bytes:
    return pem[: len(pem) // 2]


def _with_half_a_chain(pem: bytes, ca_pem: bytes) -> bytes:
    return pem + ca_pem[: len(ca_pem) // 2]


# Each breaks the files the way a copy caught halfway (or a renewal gone wrong) would, and
# returns what the server must say about it.


def _half_written(server: Rotating) -> str:
    new = server_certificate(server.pki.ca)
    server.pki.server_key_path.write_bytes(new.key)  # written in place, not renamed
    server.pki.server_cert_path.write_bytes(_truncated(new.cert))
    return f"certificate file '{server.pki.server_cert_path}' holds no PEM certificate"


def _half_a_chain(server: Rotating) -> str:
    new = server_certificate(server.pki.ca)
    server.pki.server_key_path.write_bytes(new.key)
    server.pki.server_cert_path.write_bytes(_with_half_a_chain(new.cert, server.pki.ca.cert_pem))
    return (
        f"certificate file '{server.pki.server_cert_path}' is incomplete: "
        "2 certificates begun, 1 whole"
    )


def _key_not_yet_written(server: Rotating) -> str:
    # The new certificate is in place, its key not yet: the old key does not match it.
    server.pki.server_cert_path.write_bytes(server_certificate(server.pki.ca).cert)
    return (
        f"key file '{server.pki.server_key_path}' does not match certificate "
        f"'{server.pki.server_cert_path}'"
    )


def _expired(server: Rotating) -> str:
    new = server_certificate(server.pki.ca, days=-1)
    replace_file(server.pki.server_key_path, new.key)
    replace_file(server.pki.server_cert_path, new.cert)
    return f"certificate file '{server.pki.server_cert_path}': it expired on"


def _half_written_ca(server: Rotating) -> str:
    server.pki.ca_path.write_bytes(_truncated(server.pki.ca.cert_pem))
    return f"CA file '{server.pki.ca_path}' holds no PEM certificate"


@pytest.mark.parametrize(
    "breakage",
    [_half_written, _half_a_chain, _key_not_yet_written, _expired, _half_written_ca],
    ids=["half-written", "half-a-chain", "key-not-yet-written", "expired", "half-written-ca"],
)
def test_files_that_do_not_load_keep_the_old_ones_in_force(
    server: Rotating, breakage: Callable[[Rotating], str]
) -> None:
    alice = server.pki.client("alice")
    old = serial(server.pki.server.cert)
    expected = breakage(server)
    line = server.hup("grpc", "rbac")["grpc"]
    assert " ERROR worker.serve: reload: grpc: " in line, line
    assert expected in line, line
    assert line.endswith("; the previous settings stay in force")
    assert "Traceback" not in server.stderr
    # Still serving, with what it had: the old certificate, and clients of the old CA.
    assert server.served_certificate(alice).serial_number == old
    stub = server.stub(alice)
    assert stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT).job.id
    # The rbac reload of the same round went through: one bad file spoils only its owner.
    assert server.outcome_lines("rbac")[-1].startswith("worker serve: reloaded rbac: ")

    # Fixed files are taken at the next SIGHUP.
    new = server_certificate(server.pki.ca)
    server.pki.ca_path.write_bytes(server.pki.ca.cert_pem)
    replace_file(server.pki.server_key_path, new.key)
    replace_file(server.pki.server_cert_path, new.cert)
    assert server.hup("grpc")["grpc"].startswith("worker serve: reloaded grpc: ")
    assert server.served_certificate(alice).serial_number == serial(new.cert)
    assert server.stop() == 0


def test_a_new_ca_admits_its_clients_and_the_old_ones_stay(server: Rotating) -> None:
    """CA rotation: the CA file becomes old + new; clients of either get in, after SIGHUP."""
    new_ca = authority.make_ca("the next CA", days=365)
    newcomer = client_identity(new_ca, "alice")
    with pytest.raises(grpc.RpcError) as refused:
        server.stub(newcomer).List(pb.ListRequest(), timeout=RPC_TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed
    replace_file(server.pki.ca_path, server.pki.ca.cert_pem + new_ca.cert_pem)
    line = server.hup("grpc")["grpc"]
    assert "CA 'CN=rotation test CA', 'CN=the next CA'" in line, line
    assert server.stub(newcomer).List(pb.ListRequest(), timeout=RPC_TIMEOUT) is not None
    old_client = server.pki.client("alice")
    assert server.stub(old_client).List(pb.ListRequest(), timeout=RPC_TIMEOUT) is not None
    assert server.stop() == 0


def test_a_burst_of_sighups_is_harmless(server: Rotating) -> None:
    alice = server.pki.client("alice")
    new = server_certificate(server.pki.ca)
    replace_file(server.pki.server_key_path, new.key)
    replace_file(server.pki.server_cert_path, new.cert)
    for _ in range(20):
        server.launched.process.send_signal(signal.SIGHUP)
    # Rounds asked for while one runs make one more round, not twenty.
    wait_for(lambda: server.outcome_lines("rbac"), timeout=30, what="a reload")
    wait_for(
        lambda: server.served_certificate(alice).serial_number == serial(new.cert),
        timeout=30,
        what="the new certificate",
    )
    assert len(server.outcome_lines("grpc")) <= 20
    assert server.stub(alice).List(pb.ListRequest(), timeout=RPC_TIMEOUT) is not None
    assert server.stop() == 0
    assert "Traceback" not in server.stderr


def test_the_service_manager_hears_reloading_then_ready(tmp_path: Path) -> None:
    name = f"worker-test-notify-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(RPC_TIMEOUT)
        with rotating_server(tmp_path, env={"NOTIFY_SOCKET": "@" + name}) as server:
            assert b"READY=1" in manager.recv(65536)
            server.hup("grpc", "rbac")
            reloading = manager.recv(65536).decode().splitlines()
            assert reloading[0] == "RELOADING=1"
            assert reloading[1].startswith("MONOTONIC_USEC=")
            assert int(reloading[1].split("=", 1)[1]) > 0
            ready = manager.recv(65536).decode().splitlines()
            assert ready == ["READY=1", "STATUS=serving; reloaded"]
            assert server.stop() == 0
    assert server.launched.process.wait(EXIT_TIMEOUT) == 0
