"""Authorization attacks over mTLS, against the real ``rbac`` plugin and the example policy.

- Streams (Tail, Watch) of a job one may not read: NOT_FOUND, and not one byte before it.
- A certificate that names itself "admin" without the CA's signature (self-signed, another
  CA's, or signed by a client's own key) is refused in the TLS handshake.
- Names the policy does not list, such as "*" or look-alikes of "admin", get nothing.
- Another user's job id, or a guessed one, is NOT_FOUND exactly like an unknown id: same
  code, same message shape, no owner named.
- List never shows an operator someone else's job, whatever the filters.
"""

from __future__ import annotations

import datetime
import secrets
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_certs import CA, Identity, issue, make_ca
from grpc_harness import RPC_TIMEOUT, Harness, running_server, shell

from worker_core._config import Config
from worker_plugins.grpc_transport import worker_pb2 as pb

POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    config = Config.from_mapping(
        {"engine": {"stop_grace": 0.5}, "plugins": {"rbac": {"policy": str(POLICY)}}}
    )
    with running_server(tmp_path_factory.mktemp("pki"), plugins=["rbac"], config=config) as h:
        yield h


@pytest.fixture(scope="module")
def alice_job(harness: Harness) -> Iterator[str]:
    """A running job of alice's that prints a secret on both streams."""
    job = (
        harness.stub("alice")
        .Submit(
            pb.SubmitRequest(spec=shell("echo secret; echo secret >&2; sleep 120")),
            timeout=RPC_TIMEOUT,
        )
        .job
    )
    yield job.id
    harness.engine.stop(job.id, force=True, timeout=10)


def _failure(call: Callable[[], Any]) -> tuple[grpc.RpcError, list[Any]]:
    """The error a call ends with, and every message received before it."""
    received: list[Any] = []
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__"):
            for message in result:
                received.append(message)
    return info.value, received


# --- streams without permission ---------------------------------------------------------------

TAIL_VARIANTS = {
    "from the beginning": pb.TailRequest(from_beginning=True),
    "live only": pb.TailRequest(from_end=True),
    "from offsets": pb.TailRequest(from_offsets=pb.Offsets(stdout=0, stderr=0)),
    "stderr only": pb.TailRequest(stream=pb.STREAM_STDERR),
}


@pytest.mark.parametrize("cn", ["bob", "operator", "mallory", "*"])
@pytest.mark.parametrize("variant", sorted(TAIL_VARIANTS))
def test_tail_without_permission_is_not_found_with_no_data(
    harness: Harness, alice_job: str, cn: str, variant: str
) -> None:
    request = pb.TailRequest()
    request.CopyFrom(TAIL_VARIANTS[variant])
    request.job_id = alice_job
    error, received = _failure(lambda: harness.stub(cn).Tail(request, timeout=RPC_TIMEOUT))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert received == []
    assert "secret" not in (error.details() or "")


@pytest.mark.parametrize("cn", ["bob", "operator", "mallory", "*"])
def test_watch_without_permission_is_not_found_with_no_record(
    harness: Harness, alice_job: str, cn: str
) -> None:
    error, received = _failure(
        lambda: harness.stub(cn).Watch(pb.WatchRequest(job_id=alice_job), timeout=RPC_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert received == []


def test_the_owner_and_readers_do_get_the_stream(harness: Harness, alice_job: str) -> None:
    """The control for the tests above: the same calls succeed for those the policy allows."""
    for cn in ("alice", "admin", "viewer"):
        call = harness.stub(cn).Tail(pb.TailRequest(job_id=alice_job), timeout=RPC_TIMEOUT)
        assert next(call).data == b"secret\n"
        call.cancel()


# --- impersonation: "admin" without the CA's signature ----------------------------------------


def _self_signed(cn: str) -> Identity:
    ca = make_ca(cn)  # a self-signed certificate named cn
    leaf_key = ca.key
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
        .not_valid_after(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(leaf_key, hashes.SHA256())
    )
    key = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Identity(cert.public_bytes(serialization.Encoding.PEM), key)


def _with_chain(identity: Identity, *issuers: bytes) -> Identity:
    return Identity(identity.cert + b"".join(issuers), identity.key)


def _signed_by_a_client(harness: Harness, signer_cn: str, cn: str) -> Identity:
    """A certificate for ``cn`` signed with a legitimate client's own key, chain included."""
    signer = harness.pki.client(signer_cn)
    key = serialization.load_pem_private_key(signer.key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    fake_ca = CA(x509.load_pem_x509_certificate(signer.cert), key)
    forged = issue(fake_ca, cn)
    return _with_chain(forged, signer.cert)


IMPOSTORS: dict[str, Callable[[Harness], Identity]] = {
    "self-signed admin": lambda h: _self_signed("admin"),
    "admin from another CA": lambda h: h.pki.foreign_client("admin"),
    "admin from another CA, chain included": lambda h: _with_chain(
        h.pki.foreign_client("admin"), h.pki.other_ca.cert_pem
    ),
    "admin signed by alice's key": lambda h: _signed_by_a_client(h, "alice", "admin"),
    "admin issued by a CA also named like ours": lambda h: client_of_namesake(h, "admin"),
}


def client_of_namesake(harness: Harness, cn: str) -> Identity:
    """A CA with our CA's exact name (but its own key) issues ``cn``."""
    namesake = make_ca(harness.pki.ca.common_name)
    return issue(namesake, cn)


def _raw_handshake(harness: Harness, identity: Identity, directory: Path) -> None:
    """A TLS handshake and one read with ``identity``; raises if the server refuses it."""
    cert, key = identity.write(directory, "impostor")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=harness.pki.ca.cert_pem.decode())
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", harness.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        # In TLS 1.3 the server checks the client's certificate after the client finished its
        # side of the handshake: the refusal arrives as an alert on the first read.
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\4\0\0\0\0\0")
        if not tls.recv(1024):
            raise ConnectionResetError("closed by the server")


@pytest.mark.parametrize("impostor", sorted(IMPOSTORS))
def test_impersonating_admin_without_the_ca_is_refused_in_the_handshake(
    harness: Harness, tmp_path: Path, impostor: str
) -> None:
    identity = IMPOSTORS[impostor](harness)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as info:
        _raw_handshake(harness, identity, tmp_path)
    print(f"\n{impostor}: {info.value!r}")
    before = [job.id for job in harness.engine.list()]
    stub = harness.stub_for(identity)
    error, _ = _failure(lambda: stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # no call ever reached the server
    error, _ = _failure(
        lambda: stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert [job.id for job in harness.engine.list()] == before


def test_the_real_admin_passes_the_same_handshake(harness: Harness, tmp_path: Path) -> None:
    """The control: the raw handshake above succeeds with a certificate from the CA."""
    _raw_handshake(harness, harness.pki.client("admin"), tmp_path)


# --- names the policy does not list ----------------------------------------------------------


@pytest.mark.parametrize(
    "cn", ["*", "admin ", " admin", "Admin", "ADMIN", "admin\u200b", "\u0430dmin", "admin,operator"]
)
def test_wildcard_and_lookalike_names_have_no_role(
    harness: Harness, alice_job: str, cn: str
) -> None:
    stub = harness.stub(cn)
    before = [job.id for job in harness.engine.list()]
    error, _ = _failure(
        lambda: stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for call in (
        lambda: stub.Get(pb.GetRequest(job_id=alice_job), timeout=RPC_TIMEOUT),
        lambda: stub.Stop(pb.StopRequest(job_id=alice_job, force=True), timeout=RPC_TIMEOUT),
    ):
        assert _failure(call)[0].code() == grpc.StatusCode.NOT_FOUND
    assert list(stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs) == []
    assert [job.id for job in harness.engine.list()] == before
    assert harness.engine.get(alice_job).state.value == "running"


def test_a_certificate_without_a_common_name_is_unauthenticated(harness: Harness) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca = harness.pki.ca
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "admin")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    identity = Identity(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    error, _ = _failure(
        lambda: harness.stub_for(identity).List(pb.ListRequest(), timeout=RPC_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# --- ids: another user's and guessed ones look the same -----------------------------------------


def _not_found(stub: Any, method: str, job_id: str) -> tuple[grpc.StatusCode, str, tuple[Any, ...]]:
    """The status, the message with the id masked, and the trailing metadata keys."""
    calls: dict[str, Callable[[], Any]] = {
        "Get": lambda: stub.Get(pb.GetRequest(job_id=job_id), timeout=RPC_TIMEOUT),
        "Stop": lambda: stub.Stop(pb.StopRequest(job_id=job_id, force=True), timeout=RPC_TIMEOUT),
        "Tail": lambda: stub.Tail(pb.TailRequest(job_id=job_id), timeout=RPC_TIMEOUT),
        "Watch": lambda: stub.Watch(pb.WatchRequest(job_id=job_id), timeout=RPC_TIMEOUT),
    }
    error, received = _failure(calls[method])
    assert received == []
    keys = tuple(sorted(k for k, _ in error.trailing_metadata() or ()))
    return error.code(), (error.details() or "").replace(job_id, "<id>"), keys


@pytest.mark.parametrize("method", ["Get", "Stop", "Tail", "Watch"])
def test_another_users_job_is_indistinguishable_from_an_unknown_one(
    harness: Harness, alice_job: str, method: str
) -> None:
    bob = harness.stub("bob")
    taken = _not_found(bob, method, alice_job)
    guessed = _not_found(bob, method, secrets.token_hex(16))
    print(f"\n{method}: {taken}")
    assert taken == guessed
    assert taken[0] == grpc.StatusCode.NOT_FOUND
    assert "alice" not in taken[1] and "operator" not in taken[1]
    assert harness.engine.get(alice_job).state.value == "running", "bob stopped alice's job"


def test_a_finished_job_of_another_user_is_also_not_found(harness: Harness) -> None:
    alice = harness.stub("alice")
    job = alice.Submit(pb.SubmitRequest(spec=shell("echo done")), timeout=RPC_TIMEOUT).job
    harness.engine.wait(job.id, timeout=RPC_TIMEOUT)
    bob = harness.stub("bob")
    for method in ("Get", "Stop", "Tail", "Watch"):
        assert _not_found(bob, method, job.id) == _not_found(bob, method, secrets.token_hex(16))


# --- List --------------------------------------------------------------------------------------


def test_list_never_shows_an_operator_anyone_elses_jobs(harness: Harness) -> None:
    submitted: dict[str, set[str]] = {"alice": set(), "bob": set(), "operator": set()}
    for cn, ids in submitted.items():
        stub = harness.stub(cn)
        for script in ("true", "sleep 60"):
            ids.add(stub.Submit(pb.SubmitRequest(spec=shell(script)), timeout=RPC_TIMEOUT).job.id)
    try:
        filters = [
            pb.ListRequest(),
            pb.ListRequest(owner="alice"),
            pb.ListRequest(owner="bob"),
            pb.ListRequest(owner="admin"),
            pb.ListRequest(states=[pb.JOB_STATE_RUNNING]),
            pb.ListRequest(states=[pb.JOB_STATE_ENDED, pb.JOB_STATE_RUNNING], owner="operator"),
        ]
        for cn, ids in submitted.items():
            stub = harness.stub(cn)
            for request in filters:
                jobs = stub.List(request, timeout=RPC_TIMEOUT).jobs
                assert {job.owner for job in jobs} <= {cn}, (cn, request)
            mine = {job.id for job in stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs}
            assert ids <= mine
        everyone = set().union(*submitted.values())
        for reader in ("admin", "viewer"):
            listed = harness.stub(reader).List(pb.ListRequest(), timeout=RPC_TIMEOUT).jobs
            assert everyone <= {job.id for job in listed}
    finally:
        for ids in submitted.values():
            for job_id in ids:
                harness.engine.stop(job_id, force=True, timeout=10)
