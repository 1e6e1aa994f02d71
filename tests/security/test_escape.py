"""Confinement that holds against the job itself: the escapes of issue 15, tried by the job.

A job with ``--memory 64M`` ran ``echo $$ > /sys/fs/cgroup/memory/cgroup.procs`` and left
its cgroup. Here a job tries that in every hierarchy, tries to raise its memory, pids and
CPU limits, to remount /sys writable and to kill a process outside itself, as the default
identity (nobody) and as root where the configuration allows root. The host then checks
what a user would: each of the job's processes is still in its own cgroups
(``/proc/<pid>/cgroup``), its limits are what was asked, and the outside process lives.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cgroup_helpers import cgroup_dirs_named, v1_mounts
from grpc_harness import RPC_TIMEOUT, serve_process
from helpers import alive, wait_until

from worker_core import Config, Engine, Job, JobSpec, Limits, Principal, Stream
from worker_plugins.grpc_transport import worker_pb2 as pb

MIB = 1 << 20
LIMITS = Limits(memory_max=64 * MIB, pids_max=32, cpu=0.5)
#: What LIMITS become in the v1 files.
LIMIT_FILES = {
    ("memory", "memory.limit_in_bytes"): str(64 * MIB),
    ("pids", "pids.max"): "32",
    ("cpu", "cpu.cfs_quota_us"): "50000",
}

#: One line per attempt: "ESCAPED <what>" if it worked, else "refused <what>: <why>" (the
#: end of the shell's error message). "escape over" ends the attempts.
ESCAPE = r"""
attempt() {
    if err=$( { echo "$1" > "$2"; } 2>&1 ); then echo "ESCAPED $3"; else echo "refused $3: ${err##*: }"; fi
}
own() {
    awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' \
        /proc/self/cgroup
}
for f in /sys/fs/cgroup/*/cgroup.procs; do attempt $$ "$f" "leave via $f"; done
attempt 1073741824 "/sys/fs/cgroup/memory$(own memory)/memory.limit_in_bytes" "raise memory"
attempt max "/sys/fs/cgroup/pids$(own pids)/pids.max" "raise pids"
attempt -1 "/sys/fs/cgroup/cpu$(own cpu)/cpu.cfs_quota_us" "raise cpu"
if mount -o remount,rw /sys/fs/cgroup/memory 2>/dev/null; then
    echo "ESCAPED remount"
else
    echo "refused remount: -"
fi
if err=$(kill -9 {outsider} 2>&1); then echo "ESCAPED kill"; else echo "refused kill: ${err##*: }"; fi
grep -E '^(CapEff|CapBnd):' /proc/self/status | tr -d ' \t'
echo escape over
exec sleep 300
"""

#: Why each attempt fails: for nobody the files are root's, and the outsider is another
#: user's; for root the mount is read-only and the outsider is outside its PID namespace.
REASONS = {
    "nobody": {"write": "Permission denied", "kill": "Operation not permitted"},
    "root": {"write": "Read-only file system", "kill": "No such process"},
}

#: The capabilities a root job must never hold (numbers from linux/capability.h).
FORBIDDEN = {"SYS_ADMIN": 21, "SYS_PTRACE": 19, "SYS_MODULE": 16, "DAC_READ_SEARCH": 2}

ALICE = Principal("alice")
ADMIN = Principal("admin")


def runas_settings(who: str) -> dict[str, object]:
    """The default identity for everyone, or root allowed and admin mapped to it."""
    return {} if who == "nobody" else {"allow_root": True, "users": {"admin": "root"}}


def caller(who: str) -> Principal:
    return ALICE if who == "nobody" else ADMIN


def capabilities(lines: list[str]) -> dict[str, int]:
    return {
        k: int(v, 16)
        for k, _, v in (line.partition(":") for line in lines if line.startswith("Cap"))
    }


def assert_attempts_failed(lines: list[str], who: str) -> None:
    assert "escape over" in lines, lines
    escapes = [line for line in lines if line.startswith("ESCAPED")]
    assert escapes == [], f"the job ({who}) got out: {escapes}"
    refused = dict(
        line.removeprefix("refused ").rsplit(": ", 1)
        for line in lines
        if line.startswith("refused")
    )
    for hierarchy in ("memory", "pids", "cpu"):
        assert f"leave via /sys/fs/cgroup/{hierarchy}/cgroup.procs" in refused, refused
    reasons = REASONS[who]
    for what, why in refused.items():
        expected = {"kill": reasons["kill"], "remount": "-"}.get(what, reasons["write"])
        assert why == expected, (what, why)
    caps = capabilities(lines)
    if who == "nobody":
        assert caps == {"CapEff": 0, "CapBnd": 0}
    else:
        for name, number in FORBIDDEN.items():
            assert not caps["CapBnd"] >> number & 1, f"a root job holds CAP_{name}"
            assert not caps["CapEff"] >> number & 1, f"a root job holds CAP_{name}"


def job_cgroup_dirs(parent: str, job_id: str) -> dict[str, Path]:
    """The job's cgroup in each v1 controller hierarchy, by controller."""
    return {c: mount / parent / job_id for c, mount in v1_mounts().items()}


def assert_still_confined(parent: str, job_id: str) -> None:
    dirs = job_cgroup_dirs(parent, job_id)
    pids = [int(p) for p in (dirs["memory"] / "cgroup.procs").read_text().split()]
    assert pids, "the job's memory cgroup is empty: its processes left it"
    expected = f"/{parent}/{job_id}"
    for pid in pids:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        where = {c: line.split(":", 2)[2] for line in lines for c in line.split(":")[1].split(",")}
        for controller in ("memory", "pids", "cpu", "freezer"):
            assert where[controller] == expected, (pid, controller, where[controller])
    for (controller, file), value in LIMIT_FILES.items():
        assert (dirs[controller] / file).read_text().strip() == value, (controller, file)
    # Why an unprivileged job cannot write them: root's, writable by root alone (v1 never
    # delegates a job's cgroup to its user).
    for path in (dirs["memory"] / "memory.limit_in_bytes", dirs["pids"] / "cgroup.procs"):
        info = path.stat()
        assert info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


def wait_for_attempts(read: Callable[[], bytes], timeout: float = 20.0) -> list[str]:
    assert wait_until(lambda: b"escape over" in read(), timeout), read()
    return read().decode().splitlines()


@pytest.fixture
def engine_for(parent: str) -> Iterator[Callable[[str], Engine]]:
    """Makes started engines with cgroups under ``parent`` and runas for ``who``; closes them."""
    engines: list[Engine] = []

    def make(who: str) -> Engine:
        settings = {"cgroups": {"parent": parent}, "runas": runas_settings(who)}
        engine = Engine(["cgroups", "runas"], Config.from_mapping({"plugins": settings})).start()
        engines.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in engines:
            engine.close(grace=0)


@pytest.mark.parametrize("who", ["nobody", "root"])
def test_a_job_cannot_leave_its_cgroups_raise_its_limits_or_kill_outside(
    who: str, parent: str, outsider: int, engine_for: Callable[[str], Engine]
) -> None:
    engine = engine_for(who)
    spec = JobSpec("sh", args=["-c", ESCAPE.replace("{outsider}", str(outsider))], limits=LIMITS)
    job: Job = engine.submit(spec, caller(who))
    try:
        lines = wait_for_attempts(lambda: engine.output(job.id))
        assert_attempts_failed(lines, who)
        assert engine.get(job.id).state.value == "running"
        assert_still_confined(parent, job.id)
        assert alive(outsider), "the job killed a process outside itself"
    finally:
        engine.stop(job.id, grace=0)
    # Removed after the end is reported (in the background): within a bound, not at once.
    memory = job_cgroup_dirs(parent, job.id)["memory"]
    assert wait_until(lambda: not memory.exists(), 30)


def test_unconfined_root_does_leave_so_the_probe_is_real(parent: str) -> None:
    # The same attempt by a root job the operator chose not to confine succeeds: the file
    # permissions alone do not stop root, the read-only mount and the capability set do.
    settings = {
        "cgroups": {"parent": parent},
        "runas": {**runas_settings("root"), "confine_root": False},
    }
    with Engine(["cgroups", "runas"], Config.from_mapping({"plugins": settings})) as unconfined:
        script = "echo $$ > /sys/fs/cgroup/pids/cgroup.procs && grep :pids: /proc/self/cgroup"
        job = unconfined.submit(JobSpec("sh", args=["-c", script], limits=LIMITS), ADMIN)
        ended = unconfined.wait(job.id, timeout=20)
        assert ended.exit_code == 0, unconfined.output(job.id, Stream.STDERR)
        assert unconfined.output(job.id).decode().strip().endswith(":pids:/")


def test_through_a_real_server_as_nobody_and_as_an_allowed_root(
    tmp_path: Path, parent: str, outsider: int
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[plugins.cgroups]\nparent = "{parent}"\n\n'
        '[plugins.runas]\nallow_root = true\n\n[plugins.runas.users]\nadmin = "root"\n'
    )
    script = ESCAPE.replace("{outsider}", str(outsider))
    request = pb.SubmitRequest(
        spec=pb.JobSpec(
            command="sh",
            args=["-c", script],
            limits=pb.Limits(memory_max=64 * MIB, pids_max=32, cpu=0.5),
        )
    )
    with serve_process(
        tmp_path / "pki", "--plugins", "cgroups,runas", "--config", str(config)
    ) as serve:
        for who in ("nobody", "root"):
            stub = serve.stub(caller(who).name)
            job = stub.Submit(request, timeout=RPC_TIMEOUT).job
            try:
                tail = pb.TailRequest(job_id=job.id, stream=pb.STREAM_STDOUT, until_now=True)

                def read(stub: object = stub, tail: pb.TailRequest = tail) -> bytes:
                    return b"".join(m.data for m in stub.Tail(tail, timeout=RPC_TIMEOUT))  # type: ignore[attr-defined]

                lines = wait_for_attempts(read)
                assert_attempts_failed(lines, who)
                assert_still_confined(parent, job.id)
                assert alive(outsider)
            finally:
                stub.Stop(pb.StopRequest(job_id=job.id, grace_seconds=0), timeout=RPC_TIMEOUT)
        serve.process.terminate()
        assert serve.process.wait(timeout=60) == 0, serve.stderr
    assert not cgroup_dirs_named(parent), "the server left its cgroups behind"
