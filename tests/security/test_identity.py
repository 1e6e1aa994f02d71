"""Unprivileged by default: with ``runas`` loaded and nothing configured, a caller's job runs as
nobody, cannot read /etc/shadow nor write anywhere but where it is given; a caller mapped to
an account runs as that account; root and other people's identities are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_harness import RPC_TIMEOUT, collect, serve_process, shell

from worker_core import (
    Config,
    ConfigError,
    EndReason,
    Engine,
    InvalidSpec,
    Isolation,
    Job,
    JobSpec,
    Principal,
    Stream,
)
from worker_plugins.grpc_transport import worker_pb2 as pb

ALICE = Principal("alice")
#: The default identity: nobody (the `given` fixture's directory is owned by it).
NOBODY = 65534

#: What a job tries: who it is, what it holds, /etc/shadow, writing where it was not given
#: anything, and writing where it was. One line per attempt, "refused" when it failed.
PROBE = """
id -u; id -g; id -G
grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr -d ' \\t'
if cat /etc/shadow >/dev/null 2>&1; then echo 'READ /etc/shadow'; else echo 'shadow: refused'; fi
for d in / /etc /usr/bin /root; do
    if touch "$d/{probe}" 2>/dev/null; then echo "WROTE $d"; else echo "$d: refused"; fi
done
if echo ok > {given}/out; then echo 'given: written'; fi
"""

EXPECTED_AS_NOBODY = [
    f"{NOBODY}",
    f"{NOBODY}",
    f"{NOBODY}",  # no supplementary groups: only its own gid
    "CapEff:0000000000000000",
    "CapBnd:0000000000000000",  # nothing to gain from a setuid or file-capability program
    "NoNewPrivs:1",
    "shadow: refused",
    "/: refused",
    "/etc: refused",
    "/usr/bin: refused",
    "/root: refused",
    "given: written",
]


def run(engine: Engine, script: str, principal: Principal | None = ALICE, **spec: object) -> Job:
    job = engine.submit(JobSpec("sh", args=["-c", script], **spec), principal)  # type: ignore[arg-type]
    ended = engine.wait(job.id, timeout=20)
    assert ended.is_finished, ended
    return ended


def out(engine: Engine, job: Job) -> list[str]:
    return engine.output(job.id).decode().splitlines()


def test_a_callers_job_runs_as_nobody_and_cannot_read_shadow_or_write_outside_its_directory(
    given: Path, probe_name: str
) -> None:
    with Engine(["runas"]) as engine:
        job = run(engine, PROBE.format(probe=probe_name, given=given))
        assert job.exit_code == 0, engine.output(job.id, Stream.STDERR)
        assert out(engine, job) == EXPECTED_AS_NOBODY
    assert (given / "out").read_text() == "ok\n"
    assert (given / "out").stat().st_uid == NOBODY
    assert not any(Path(d, probe_name).exists() for d in ("/", "/etc", "/usr/bin", "/root"))


def test_through_a_real_server_alices_job_runs_as_nobody(
    tmp_path: Path, given: Path, probe_name: str
) -> None:
    # Only `runas` enabled, nothing configured: its defaults are what a server gets.
    with serve_process(tmp_path / "pki", "--plugins", "runas") as serve:
        stub = serve.stub("alice")
        request = pb.SubmitRequest(
            spec=shell(PROBE.format(probe=probe_name, given=given)), wait_seconds=15
        )
        job = stub.Submit(request, timeout=RPC_TIMEOUT).job
        assert job.state == pb.JOB_STATE_ENDED
        streams = collect(stub.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT))
        assert job.exit_code == 0, streams
        assert streams[pb.STREAM_STDOUT].decode().splitlines() == EXPECTED_AS_NOBODY
        # Root is refused to a caller, at submit, with the field named.
        root = pb.SubmitRequest(spec=pb.JobSpec(command="/bin/true", isolation=pb.Isolation(uid=0)))
        with pytest.raises(Exception, match=r"root") as info:
            stub.Submit(root, timeout=RPC_TIMEOUT)
        assert "isolation.uid" in str(info.value)
    assert (given / "out").stat().st_uid == NOBODY


# ------------------------------------------------------------------ callers mapped to accounts


def test_callers_run_as_the_accounts_the_configuration_maps_them_to() -> None:
    # Accounts every Debian-like host has: daemon (1:1); a uid without an account; a group.
    config = Config.from_mapping(
        {
            "plugins": {
                "runas": {"users": {"alice": "daemon", "bob": 4242, "carol": "nobody:daemon"}}
            }
        }
    )
    with Engine(["runas"], config) as engine:
        ids = {
            name: out(engine, run(engine, "id -u; id -g", Principal(name)))
            for name in ("alice", "bob", "carol", "dave")
        }
    assert ids == {
        "alice": ["1", "1"],
        "bob": ["4242", "4242"],  # no account: the gid is the same number
        "carol": [f"{NOBODY}", "1"],
        "dave": [f"{NOBODY}", f"{NOBODY}"],  # not mapped: the default identity
    }


def test_a_caller_may_not_pick_another_identity_but_a_local_job_may() -> None:
    config = Config.from_mapping({"plugins": {"runas": {"users": {"alice": "daemon"}}}})
    with Engine(["runas"], config) as engine:
        refused = run(engine, "id -u", ALICE, isolation=Isolation(uid=NOBODY))
        assert refused.end_reason is EndReason.FAILED_TO_START
        assert "isolation.uid" in refused.message and "alice's jobs run as uid 1" in refused.message
        # Naming the identity it has anyway is fine.
        same = run(engine, "id -u", ALICE, isolation=Isolation(uid=1, gid=1))
        assert out(engine, same) == ["1"]
        # No caller (the library, `worker run`): the caller already has the engine's powers.
        local = run(engine, "id -u; id -g", None, isolation=Isolation(uid=1))
        assert out(engine, local) == ["1", "1"]  # the account's primary group
        assert len(engine.list()) == 3


def test_callers_choose_ids_lets_a_caller_name_one() -> None:
    config = Config.from_mapping({"plugins": {"runas": {"callers_choose_ids": True}}})
    with Engine(["runas"], config) as engine:
        job = run(engine, "id -u; id -g", ALICE, isolation=Isolation(uid=1))
        assert out(engine, job) == ["1", "1"]
        with pytest.raises(InvalidSpec, match=r"isolation\.uid.*root"):
            engine.submit(JobSpec("/bin/true", isolation=Isolation(uid=0)), ALICE)


# ------------------------------------------------------------------ bad configuration


def test_an_unknown_account_stops_the_engine_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        "[plugins.runas]\nallow_root = false\n\n[plugins.runas.users]\n"
        'alice = "daemon"\nbob = "no-such-user-here"\ncarol = "nobody:no-such-group"\n'
        "admin = 0\nerin = true\n"
    )
    with pytest.raises(ConfigError) as info:
        Engine(["runas"], Config.load(path))
    lines = str(info.value).splitlines()
    shown = str(path)
    assert lines == [
        f"{shown}:6: plugins.runas.users.bob: no user 'no-such-user-here' on this host",
        f"{shown}:7: plugins.runas.users.carol: no group 'no-such-group' on this host",
        f"{shown}:8: plugins.runas.users.admin: is root (uid 0, gid 0) but allow_root = false",
        f'{shown}:9: plugins.runas.users.erin: expected a user name, "user:group" or a uid, '
        "got bool True",
    ]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"default_uid": 0}, "plugins.runas.default_uid: is root but allow_root = false"),
        ({"users": {"x": "root:"}}, 'plugins.runas.users.x: expected a user name, "user:group"'),
        ({"users": {"x": 2**32}}, "plugins.runas.users.x: uid 4294967296 is out of range"),
        (
            {"root_capabilities": ["SYS_ADMIN", "FLY"]},
            r"root_capabilities: unknown capabilities \['FLY'\]",
        ),
        ({"root_readonly_paths": ["sys"]}, r"root_readonly_paths must be absolute paths"),
        ({"default_uid": -1}, "default_uid must be a uid/gid from 0 to"),
    ],
)
def test_bad_runas_settings_are_refused_naming_the_key(
    section: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Engine(["runas"], Config.from_mapping({"plugins": {"runas": section}}))


def test_root_is_refused_by_default_at_submit_and_leaves_nothing() -> None:
    with Engine(["runas"]) as engine:
        for isolation in (Isolation(uid=0), Isolation(gid=0), Isolation(uid=NOBODY, gid=0)):
            with pytest.raises(InvalidSpec, match=r"runas\.allow_root = false"):
                engine.submit(JobSpec("/bin/true", isolation=isolation), ALICE)
        assert engine.list() == []
