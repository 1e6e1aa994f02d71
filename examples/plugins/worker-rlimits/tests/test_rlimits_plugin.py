"""The ``rlimits`` plugin through a real engine: real jobs, limits read back from inside them."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from worker_rlimits.plugin import HostLimits

from worker_core.plugin import (
    ConfigError,
    EndReason,
    Engine,
    InvalidSpec,
    Job,
    JobSpec,
    SpawnPlan,
    hookimpl,
)
from worker_core.testing import run_job, running_engine

#: Every wait on a job is bounded; a busy loop under a 1 s CPU limit ends well within this.
WAIT = 30.0


def rlimits_with(
    *plugins: object, config: dict[str, Any] | None = None
) -> contextlib.AbstractContextManager[Engine]:
    """A started engine with ``rlimits`` (``config`` as its section) and ``plugins``."""
    return running_engine("rlimits", *plugins, config={"plugins": {"rlimits": config or {}}})


@pytest.fixture
def rlimits_engine() -> Iterator[Engine]:
    with rlimits_with() as engine:
        yield engine


def run(engine: Engine, command: str, *args: str, **spec: Any) -> Job:
    return run_job(engine, JobSpec(command, args, **spec), WAIT)


def output(engine: Engine, command: str, *args: str, **spec: Any) -> str:
    job = run(engine, command, *args, **spec)
    assert job.exit_code == 0, job.message
    return engine.output(job.id).decode()


def proc_limits(engine: Engine, **spec: Any) -> dict[str, tuple[str, str]]:
    """The job's own view of its limits: /proc/self/limits, by row name."""
    text = output(engine, "cat", "/proc/self/limits", **spec)
    rows = {}
    for line in text.splitlines()[1:]:
        # "Max open files            1024                 4096                 files"
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        rows[name] = (soft, hard)
    return rows


def test_nofile_soft_and_hard_are_seen_by_the_job(rlimits_engine):
    options = {"rlimits.nofile": "256:512"}
    assert (
        output(rlimits_engine, "sh", "-c", "ulimit -Sn; ulimit -Hn", options=options)
        == "256\n512\n"
    )


def test_one_value_sets_soft_and_hard_like_ulimit(rlimits_engine):
    options = {"rlimits.nofile": "300"}
    assert (
        output(rlimits_engine, "sh", "-c", "ulimit -Sn; ulimit -Hn", options=options)
        == "300\n300\n"
    )


def test_byte_sizes_take_suffixes(rlimits_engine):
    options = {"rlimits.as": "1G:2G", "rlimits.core": "0", "rlimits.fsize": "10M"}
    limits = proc_limits(rlimits_engine, options=options)
    assert limits["Max address space"] == (str(1 << 30), str(2 << 30))
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max file size"] == (str(10 << 20), str(10 << 20))


def test_cpu_soft_limit_ends_a_busy_loop_with_sigxcpu(rlimits_engine, tmp_path):
    # core = 0 as well: SIGXCPU dumps core by default, and core_pattern may write into cwd.
    job = run(
        rlimits_engine,
        "sh",
        "-c",
        "while :; do :; done",
        cwd=str(tmp_path),
        options={"rlimits.cpu": "1:10", "rlimits.core": "0"},
    )
    assert job.end_reason is EndReason.EXITED
    assert job.signal == signal.SIGXCPU
    # Ended by the soft limit, well before the hard one. (The figure comes from rusage, which
    # samples CPU time and may read under what the kernel's limit counted: bounds, not a value.)
    assert 0.5 <= job.facts["cpu_seconds"] < 10
    assert list(tmp_path.iterdir()) == []


def test_one_cpu_value_is_a_hard_limit_the_kernel_enforces_with_sigkill(rlimits_engine):
    # soft = hard: the kernel checks the hard limit first, so there is no SIGXCPU warning.
    job = run(rlimits_engine, "sh", "-c", "while :; do :; done", options={"rlimits.cpu": "1"})
    assert job.signal == signal.SIGKILL
    assert job.facts["cpu_seconds"] >= 0.5  # it ran until the limit, not killed at once


def test_cpu_hard_limit_kills_a_job_that_ignores_sigxcpu(rlimits_engine, tmp_path):
    job = run(
        rlimits_engine,
        "sh",
        "-c",
        "trap '' XCPU; while :; do :; done",
        cwd=str(tmp_path),
        options={"rlimits.cpu": "1:2", "rlimits.core": "0"},
    )
    assert job.end_reason is EndReason.EXITED
    assert job.signal == signal.SIGKILL
    # It outlived the soft limit (1 s) it ignored; SIGKILL is the hard one. rusage may read a
    # little under the 2 s the kernel counted, so the bound sits between the two limits.
    assert 1.2 <= job.facts["cpu_seconds"] < 10


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("rlimits.nofile", "lots", "is not a count amount"),
        ("rlimits.nofile", "10:5", "above the hard limit"),
        ("rlimits.cpu", "1K", "size suffixes are for byte amounts"),
        ("rlimits.cpu", "0", "must be at least 1"),
        ("rlimits.nofile", str(1 << 40), "fs.nr_open"),
        ("rlimits.stack", "8M", "unknown resource 'stack'"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_registered(rlimits_engine, option, value, problem):
    with pytest.raises(InvalidSpec, match=problem) as caught:
        rlimits_engine.submit(JobSpec("true", options={option: value}))
    assert caught.value.field == f"options.{option}"
    assert rlimits_engine.list() == []


def test_a_hard_limit_above_the_workers_own_is_refused_without_privilege(rlimits_engine):
    host = HostLimits.read()
    own = host.own_hard["nofile"]
    if host.can_raise_hard or own == -1 or own >= host.nr_open:
        pytest.skip("this process may raise its nofile hard limit")
    with pytest.raises(InvalidSpec, match="CAP_SYS_RESOURCE"):
        rlimits_engine.submit(JobSpec("true", options={"rlimits.nofile": f"64:{own + 1}"}))
    assert rlimits_engine.list() == []


def test_without_the_plugin_the_option_is_refused_not_ignored():
    with (
        running_engine() as engine,
        pytest.raises(InvalidSpec, match="is the 'rlimits' plugin enabled"),
    ):
        engine.submit(JobSpec("true", options={"rlimits.nofile": "64"}))


def test_configured_defaults_apply_unless_the_job_sets_the_option():
    with rlimits_with(config={"defaults": {"nofile": 200, "core": "0"}}) as engine:
        assert output(engine, "sh", "-c", "ulimit -n") == "200\n"
        options = {"rlimits.nofile": "100"}
        assert output(engine, "sh", "-c", "ulimit -n; ulimit -c", options=options) == "100\n0\n"


def test_maximum_caps_what_a_job_may_ask_and_limits_jobs_that_do_not():
    with rlimits_with(config={"maximum": {"nofile": "500"}}) as engine:
        assert output(engine, "sh", "-c", "ulimit -Sn; ulimit -Hn") == "500\n500\n"
        options = {"rlimits.nofile": "100:400"}
        assert output(engine, "sh", "-c", "ulimit -Sn; ulimit -Hn", options=options) == "100\n400\n"
        with pytest.raises(
            InvalidSpec, match=r"at most 500 here \(plugins.rlimits.maximum.nofile\)"
        ):
            engine.submit(JobSpec("true", options={"rlimits.nofile": "100:unlimited"}))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"defaults": {"stack": "8M"}},
            "unknown resource 'stack'.* @ \\$.plugins.rlimits.defaults.stack",
        ),
        (
            {"defaults": {"nofile": "many"}},
            "not a count amount .* @ \\$.plugins.rlimits.defaults.nofile",
        ),
        (
            {"defaults": {"nofile": "600"}, "maximum": {"nofile": "500"}},
            "above maximum.nofile \\(500\\) @ \\$.plugins.rlimits.defaults.nofile",
        ),
        (
            {"maximum": {"cpu": "1:2"}},
            "one amount, not SOFT:HARD @ \\$.plugins.rlimits.maximum.cpu",
        ),
        ({"nofile": 1024}, "extra fields found \\(nofile\\) @ \\$.plugins.rlimits"),
    ],
)
def test_configuration_errors_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message), rlimits_with(config=section):
        pass


class _TightNofile:
    """Another plugin limiting the same resource: the tighter limit must win."""

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        plan.rlimits["RLIMIT_NOFILE"] = (150, 150)


def test_never_loosens_a_limit_another_plugin_set():
    with rlimits_with(_TightNofile()) as engine:
        options = {"rlimits.nofile": "100:1000"}
        assert output(engine, "sh", "-c", "ulimit -Sn; ulimit -Hn", options=options) == "100\n150\n"
