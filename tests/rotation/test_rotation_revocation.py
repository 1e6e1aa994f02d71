"""Revocation on a real ``worker serve``: a revoked client certificate is refused on every
call with PERMISSION_DENIED, while another certificate with the same Common Name still works;
revoking takes effect on SIGHUP, even on a connection already open."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from grpc_harness import RPC_TIMEOUT, shell
from rotation_harness import POLICY, make_rotation_pki, rotating_server

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

REFUSAL = "refused 'alice': its certificate is revoked"


def _openssl_serial(pem: bytes) -> str:
    """The serial as ``openssl x509 -serial`` prints it: capitals, an even number of digits."""
    digits = f"{x509.load_pem_x509_certificate(pem).serial_number:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def _colon_sha256(pem: bytes) -> str:
    """The fingerprint as ``openssl x509 -fingerprint -sha256`` prints it: ``AB:CD:...``."""
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def _every_call(stub: pb_grpc.WorkerStub, job_id: str) -> dict[str, Callable[[], object]]:
    return {
        "Get": lambda: stub.Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT),
        "List": lambda: stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT),
        "Submit": lambda: stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT),
        "Tail": lambda: list(stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT)),
        "Watch": lambda: list(stub.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT)),
        "Stop": lambda: stub.Stop(pb.StopRequest(job_id=job_id), timeout=RPC_TIMEOUT),
    }


def _refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize("by", ["serial", "sha256"])
def test_a_revoked_certificate_is_refused_on_every_call_and_another_works(
    tmp_path: Path, by: str
) -> None:
    pki = make_rotation_pki(tmp_path / "pki")
    revoked, good = pki.client("alice"), pki.client("alice")
    entry = (
        f'serials = ["{_openssl_serial(revoked.cert)}"]'
        if by == "serial"
        else f'sha256 = ["{_colon_sha256(revoked.cert)}"]'
    )
    with rotating_server(
        tmp_path, pki=pki, policy_text=f"{POLICY}\n[revoked]\n{entry}\n"
    ) as server:
        alice = server.stub(good)
        job = alice.Submit(pb.SubmitRequest(spec=shell("echo hello")), timeout=RPC_TIMEOUT).job
        refused = server.stub(revoked)
        for name, call in _every_call(refused, job.id).items():
            code, details = _refusal(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED, name
            assert details == "the client certificate of 'alice' is revoked", name
        # The other certificate of the same name: everything as before.
        assert alice.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job.owner == "alice"
        assert job.id in [j.id for j in alice.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs]
        tail = alice.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT)
        assert b"".join(message.data for message in tail) == b"hello\n"
        assert server.stop() == 0
    # Logged once for that certificate, not once per call.
    [logged] = [line for line in server.stderr.splitlines() if REFUSAL in line]
    assert " WARNING worker.rbac: " in logged
    digest = x509.load_pem_x509_certificate(revoked.cert).fingerprint(hashes.SHA256()).hex()
    assert f"sha256 {digest}" in logged


def test_revoking_on_sighup_refuses_the_next_call_of_an_open_connection(tmp_path: Path) -> None:
    with rotating_server(tmp_path) as server:
        identity = server.pki.client("alice")
        stub = server.stub(identity)
        job = stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT).job
        text = f'{POLICY}\n[revoked]\nsha256 = ["{_colon_sha256(identity.cert).lower()}"]\n'
        server.policy.write_text(text)
        line = server.hup("rbac")["rbac"]
        assert line.endswith(": 3 users, 1 revoked certificate"), line
        code, _ = _refusal(lambda: stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # Unrevoked again by the next policy.
        server.policy.write_text(POLICY)
        server.hup("rbac")
        assert stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job.id == job.id
        assert server.stop() == 0
