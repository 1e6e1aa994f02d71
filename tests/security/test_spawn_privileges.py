"""The spawn plan's privilege fields, applied by the launcher between fork and exec:
``capabilities`` (bounding, effective, permitted; inheritable and ambient cleared),
``readonly_paths`` (inside the job's own mount namespace, never the host's), and what a job
gets without them (the library's behaviour, unchanged)."""

from __future__ import annotations

from pathlib import Path

from worker_core import EndReason, Engine, Job, JobSpec, Stream
from worker_core.plugin import SpawnPlan, hookimpl

STATUS = (
    "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | tr -d ' \\t'"
)


class Plan:
    """A throwaway plugin that sets plan fields."""

    def __init__(self, **fields: object) -> None:
        self.fields = fields

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        for name, value in self.fields.items():
            setattr(plan, name, value)


def run(plugins: list[object], script: str) -> tuple[Job, str, str]:
    with Engine(plugins) as engine:
        job = engine.submit(JobSpec("sh", args=["-c", script]))
        ended = engine.wait(job.id, timeout=20)
        return ended, engine.output(job.id).decode(), engine.output(job.id, Stream.STDERR).decode()


def status(out: str) -> dict[str, int]:
    return {k: int(v, 16) for k, _, v in (line.partition(":") for line in out.splitlines())}


def mounts_of_host() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_a_root_job_keeps_exactly_the_capabilities_of_its_plan() -> None:
    kill, chown = 1 << 5, 1 << 0
    job, out, err = run([Plan(capabilities={"KILL", "CAP_CHOWN"})], STATUS)
    assert job.exit_code == 0, err
    assert status(out) == {
        "CapInh": 0,
        "CapPrm": kill | chown,
        "CapEff": kill | chown,
        "CapBnd": kill | chown,
        "CapAmb": 0,
        "NoNewPrivs": 0,
    }


def test_without_the_fields_a_root_job_is_the_hosts_root_as_before() -> None:
    # What `worker run` and library users get when no plugin asks for less.
    job, out, err = run([], STATUS)
    assert job.exit_code == 0, err
    caps = status(out)
    assert caps["CapEff"] >> 21 & 1 and caps["CapBnd"] >> 21 & 1  # CAP_SYS_ADMIN
    assert caps["NoNewPrivs"] == 0


def test_readonly_paths_hold_against_root_in_the_jobs_namespace_only() -> None:
    before = mounts_of_host()
    script = (
        "echo $$ > /sys/fs/cgroup/pids/cgroup.procs; echo 1 > /proc/sys/vm/overcommit_memory; "
        'awk \'$5 == "/sys" || $5 == "/sys/fs/cgroup/memory" {print $5, $6}\' /proc/self/mountinfo'
    )
    job, out, err = run([Plan(readonly_paths=["/sys", "/proc/sys"])], script)
    assert job.exit_code == 0, err
    assert "cgroup.procs: Read-only file system" in err
    assert "overcommit_memory: Read-only file system" in err
    # The job's own bind of /sys (and the submounts it carries) is the last one per path.
    last = dict(line.split(" ", 1) for line in out.splitlines())
    assert last["/sys"].startswith("ro") and last["/sys/fs/cgroup/memory"].startswith("ro")
    assert mounts_of_host() == before, "the host's mounts changed"


def test_the_mntns_plugin_makes_sys_read_only_even_for_root() -> None:
    job, out, err = run(["mntns"], "echo $$ > /sys/fs/cgroup/memory/cgroup.procs; echo done")
    assert job.exit_code == 0 and out == "done\n"
    assert "Read-only file system" in err


def test_a_missing_readonly_path_is_skipped_and_bad_fields_fail_the_start() -> None:
    job, _, err = run([Plan(readonly_paths=["/no/such/path", "/sys"])], "true")
    assert job.exit_code == 0, err
    for fields, message in (
        ({"capabilities": {"FLY"}}, "unknown capabilities ['FLY']"),
        ({"readonly_paths": ["sys"]}, "readonly_paths must be absolute"),
    ):
        job, _, _ = run([Plan(**fields)], "true")
        assert job.end_reason is EndReason.FAILED_TO_START
        assert message in job.message
