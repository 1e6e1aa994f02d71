"""mTLS and identity over the wire: who may connect, who the caller is, what each may do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_certs import issue
from grpc_harness import RPC_TIMEOUT, Harness, running_server, shell, spec

from worker_core.plugin import Action, Job, Principal, hookimpl
from worker_plugins.certs.client_identity import Unauthenticated
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.auth import peer_principal


class OwnerOnly:
    """Throwaway authorization: admin does anything; others submit, and see and stop their own.

    ``mallory`` may do nothing; ``crash`` makes the hook raise (a plugin bug).
    """

    name = "owner-only"

    @hookimpl
    def authorize(self, principal: Principal, action: Action, job: Job | None) -> bool | None:
        if principal.name == "crash":
            raise RuntimeError("authorization plugin bug")
        if principal.name == "admin":
            return True
        if principal.name == "mallory":
            return False
        if action is Action.SUBMIT or job is None:
            return True
        return job.owner == principal


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_server(tmp_path_factory.mktemp("pki"), plugins=[OwnerOnly()]) as h:
        yield h


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


# --- the handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["no certificate", "another CA", "expired", "serverAuth only"])
def test_connection_refused(harness: Harness, which: str) -> None:
    pki = harness.pki
    identity = {
        "no certificate": None,
        "another CA": pki.foreign_client("alice"),
        "expired": pki.expired_client("alice"),
        "serverAuth only": pki.server_only_client("alice"),
    }[which]
    stub = harness.stub_for(identity)
    with pytest.raises(grpc.RpcError) as info:
        stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
    # Refused at the TLS handshake: the call never reaches a handler.
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


def test_certificate_without_extended_key_usage_is_refused_by_the_guard(harness: Harness) -> None:
    # No EKU extension passes the TLS handshake (X.509: any usage); the guard requires
    # clientAuth to be stated.
    stub = harness.stub_for(issue(harness.pki.ca, "alice", usages=()))
    with pytest.raises(grpc.RpcError) as info:
        stub.Submit(pb.SubmitRequest(spec=spec("/bin/true")), timeout=RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client authentication" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Watch(pb.WatchRequest(job_id="x"), timeout=RPC_TIMEOUT))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_identity_is_the_certificate_cn_not_metadata(harness: Harness) -> None:
    stub = harness.stub("alice")
    reply = stub.Submit(
        pb.SubmitRequest(spec=spec("/bin/true")),
        metadata=[("x-worker-principal", "admin"), ("cn", "admin")],
        timeout=RPC_TIMEOUT,
    )
    assert reply.job.owner == "alice"
    assert harness.engine.get(reply.job.id).owner == Principal("alice")


# --- the guard's EKU check, directly ----------------------------------------------------------


def test_peer_principal(tmp_path: Path, harness: Harness) -> None:
    ca = harness.pki.ca
    good = issue(ca, "carol")
    assert peer_principal({"x509_pem_cert": [good.cert]}) == Principal("carol")
    both = issue(ca, "dave", (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    assert peer_principal({"x509_pem_cert": [both.cert]}) == Principal("dave")
    for bad in (
        {},
        {"x509_pem_cert": [issue(ca, "erin", (ExtendedKeyUsageOID.SERVER_AUTH,)).cert]},
        {"x509_pem_cert": [issue(ca, "erin", ()).cert]},
        {"x509_pem_cert": [b"not a certificate"]},
    ):
        with pytest.raises(Unauthenticated):
            peer_principal(bad)


# --- authorization: the engine's authorize hook, on every method -------------------------------


def test_authorization_on_every_method(harness: Harness) -> None:
    alice, bob, admin = harness.stub("alice"), harness.stub("bob"), harness.stub("admin")
    job = alice.Submit(
        pb.SubmitRequest(spec=shell("echo secret; sleep 30")), timeout=RPC_TIMEOUT
    ).job
    try:
        # bob cannot tell alice's job from a job that does not exist.
        for call in (
            lambda: bob.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT),
            lambda: bob.Stop(pb.StopRequest(job_id=job.id), timeout=RPC_TIMEOUT),
            lambda: list(bob.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT)),
            lambda: list(bob.Watch(pb.WatchRequest(job_id=job.id), timeout=RPC_TIMEOUT)),
        ):
            assert _code(call) == grpc.StatusCode.NOT_FOUND
        assert job.id not in [j.id for j in bob.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs]
        assert job.id in [j.id for j in alice.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs]
        assert admin.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job.owner == "alice"
        mallory = harness.stub("mallory")
        assert (
            _code(lambda: mallory.Submit(pb.SubmitRequest(spec=spec("/bin/true")), timeout=5))
            == grpc.StatusCode.PERMISSION_DENIED
        )
    finally:
        stopped = admin.Stop(pb.StopRequest(job_id=job.id, force=True), timeout=RPC_TIMEOUT).job
    assert stopped.state == pb.JOB_STATE_ENDED
    assert stopped.end_reason == pb.END_REASON_STOPPED


def test_a_crashing_authorizer_is_internal_not_unknown(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    job = (
        harness.stub("alice")
        .Submit(pb.SubmitRequest(spec=spec("/bin/true")), timeout=RPC_TIMEOUT)
        .job
    )
    with pytest.raises(grpc.RpcError) as info:
        harness.stub("crash").Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "authorization plugin bug" not in info.value.details()
    assert "Traceback" not in info.value.details()
    assert "authorization plugin bug" in caplog.text
