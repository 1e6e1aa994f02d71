"""SIGHUP reloads the rbac policy of a real ``worker serve``; a policy that does not load,
a malformed revocation entry included, leaves the one in force."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, shell, spawn_serve
from rotation_harness import EXIT_TIMEOUT, POLICY, make_rotation_pki, rotating_server, write_config

from worker_plugins.grpc_transport import worker_pb2 as pb


def _submit_code(stub: object) -> grpc.StatusCode:
    try:
        stub.Submit(pb.SubmitRequest(spec=shell("true")), timeout=RPC_TIMEOUT)  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_policy_change_takes_effect_on_sighup(tmp_path: Path) -> None:
    with rotating_server(tmp_path) as server:
        bob = server.stub(server.pki.client("bob"))
        assert _submit_code(bob) == grpc.StatusCode.PERMISSION_DENIED
        server.policy.write_text(POLICY.replace("bob = []", 'bob = ["operator"]'))
        line = server.hup("rbac")["rbac"]
        assert (
            line
            == f"worker serve: reloaded rbac: policy {server.policy}: 3 users, 0 revoked certificates"
        )
        # The same connection, a new answer: the policy is read per call.
        assert _submit_code(bob) == grpc.StatusCode.OK
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            POLICY.replace("bob = []", 'bob = ["operater"]'),
            ":10: users.bob: unknown role 'operater' (defined roles: admin, operator)",
        ),
        (
            POLICY + '\n[revoked]\nserials = [\n  "0a1b",\n  "0x1234",\n]\n',
            ":15: revoked.serials[1]: not a certificate serial number: '0x1234'",
        ),
        (
            POLICY + '\n[revoked]\nsha256 = ["AB:CD:EF"]\n',
            ":13: revoked.sha256[0]: not a SHA-256 fingerprint: 'AB:CD:EF' (expected 64 hex digits",
        ),
        (POLICY + "[roles\n", ": invalid TOML: "),
    ],
    ids=["unknown-role", "malformed-serial", "malformed-sha256", "invalid-toml"],
)
def test_a_policy_that_does_not_load_keeps_the_old_one(
    tmp_path: Path, text: str, problem: str
) -> None:
    with rotating_server(tmp_path) as server:
        alice, bob = server.stub(server.pki.client("alice")), server.stub(server.pki.client("bob"))
        # Were the broken policy in force, bob would be an operator: it is not.
        server.policy.write_text(text.replace("bob = []", 'bob = ["operator"]'))
        line = server.hup("rbac")["rbac"]
        assert " ERROR worker.serve: reload: rbac: " in line, line
        assert f"{server.policy}{problem}" in line, line
        assert line.endswith("; the previous settings stay in force")
        assert _submit_code(alice) == grpc.StatusCode.OK
        assert _submit_code(bob) == grpc.StatusCode.PERMISSION_DENIED
        assert server.stop() == 0
        assert "Traceback" not in server.stderr


def test_a_malformed_revocation_entry_stops_the_start_with_its_line(tmp_path: Path) -> None:
    pki = make_rotation_pki(tmp_path / "pki")
    text = POLICY + '\n[revoked]\nserials = ["4162aa17", "not-hex"]\n'
    config, policy = write_config(tmp_path / "etc", text)
    launched = spawn_serve(pki, "--plugins", "rbac", "--config", str(config))
    try:
        assert launched.process.wait(EXIT_TIMEOUT) == 1
    finally:
        launched.reap()
    assert launched.stderr.splitlines() == [
        f"worker serve: error: {policy}:13: revoked.serials[1]: not a certificate serial "
        "number: 'not-hex' (expected up to 40 hex digits, optionally separated by colons: "
        '"0a1b2c" or "0A:1B:2C")'
    ]
