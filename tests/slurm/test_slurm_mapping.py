"""What the executor tells Slurm, and what it makes of Slurm's answers: the batch script
(run here by the real /bin/sh), the rounding of limits, and the state table."""

from __future__ import annotations

import signal
import subprocess

import pytest

from worker_core.plugin import Job, JobSpec, SpawnPlan
from worker_plugins.slurm import mapping, states
from worker_plugins.slurm.capabilities import ClusterCapabilities
from worker_plugins.slurm.commands import JobStatus, parse_sacct, parse_squeue

MIB = 1 << 20


def test_the_batch_script_execs_the_command_with_every_argument_intact() -> None:
    args = [
        "plain",
        "with space",
        "it's",
        '"double"',
        "$HOME `id` $(id) \\n",
        "new\nline",
        "",
        "caf\u00e9",
        "raw\udcff",  # a byte that is not UTF-8, as the engine carries it
    ]
    plan = SpawnPlan(executable="/usr/bin/printf", argv=["printf", "%s\\0", *args], env={}, cwd="/")
    script = mapping.batch_script(Job(id="a" * 32, owner=None, spec=JobSpec("printf")), plan)
    assert script.startswith(b"#!/bin/sh\n")
    out = subprocess.run(["/bin/sh"], input=script, capture_output=True, check=True, timeout=10)
    printed = out.stdout.split(b"\0")[:-1]
    assert printed == [a.encode("utf-8", "surrogateescape") for a in args]


def test_the_environment_file_keeps_every_value_as_is() -> None:
    env = {"A": "1,2", "B": "x=y", "C": "two\nlines", "D": ""}
    assert mapping.environment(env) == b"A=1,2\0B=x=y\0C=two\nlines\0D=\0"


@pytest.mark.parametrize(
    ("size", "mib"), [(1, 1), (MIB, 1), (MIB + 1, 2), (64 * MIB, 64), (64 * MIB + 1, 65)]
)
def test_memory_rounds_up_to_whole_mib(size: int, mib: int) -> None:
    assert mapping.memory_mib(size) == mib


@pytest.mark.parametrize(("cpu", "count"), [(0.01, 1), (0.5, 1), (1.0, 1), (1.2, 2), (3.0, 3)])
def test_cpu_fractions_round_up_to_whole_cpus(cpu: float, count: int) -> None:
    assert mapping.cpu_count(cpu) == count


@pytest.mark.parametrize(("seconds", "minutes"), [(0.5, 1), (60, 1), (61, 2), (3600, 60)])
def test_time_limits_round_up_to_whole_minutes(seconds: float, minutes: int) -> None:
    assert mapping.time_minutes(seconds) == minutes


# squeue -O JobID:|,State:|,Reason:|,exit_code:|,NodeList:| as Slurm 22.05 prints it.
SQUEUE = """\
7|FAILED|NonZeroExitCode|768|n1|
8|FAILED|JobLaunchFailure|15|n1|
11|OUT_OF_MEMORY|OutOfMemory|253|n2|
12|CANCELLED|None|9|n1|
13|CANCELLED|JobHeldUser|0||
14|RUNNING|None|0|n1|
15|COMPLETED|None|0|n2|
16|NODE_FAIL|NodeDown|0|n2|
17|TIMEOUT|TimeLimit|15|n1|
"""


def test_slurms_states_map_to_how_the_job_ended() -> None:
    found = parse_squeue(SQUEUE)
    assert not states.is_finished(found["14"])

    def summary(slurm_id: str) -> tuple[object, ...]:
        end = states.ended(found[slurm_id])
        return end.exit_code, end.signal, end.oom_killed, end.lost is not None

    assert summary("7") == (3, None, False, False)
    assert summary("8") == (None, signal.SIGTERM, False, False)
    assert summary("11") == (None, signal.SIGKILL, True, False)
    assert summary("12") == (None, signal.SIGKILL, False, False)
    assert summary("13") == (None, signal.SIGKILL, False, False)  # cancelled before it ran
    assert summary("15") == (0, None, False, False)
    assert summary("16") == (None, None, False, True)  # its node failed: lost
    assert summary("17") == (None, signal.SIGTERM, False, False)
    assert states.ended(found["7"]).facts == {
        "slurm_job_id": "7",
        "slurm_state": "FAILED",
        "slurm_nodes": "n1",
        "slurm_reason": "NonZeroExitCode",
    }


def test_sacct_answers_map_like_squeues() -> None:
    found = parse_sacct("21|COMPLETED|0:0|n1\n22|CANCELLED by 0|0:9|n2\n23|FAILED|2:0|n1\n")
    assert {k: (v.state, v.exit_status) for k, v in found.items()} == {
        "21": ("COMPLETED", 0),
        "22": ("CANCELLED", 9),
        "23": ("FAILED", 2 << 8),
    }
    assert isinstance(found["21"], JobStatus)


@pytest.mark.parametrize(
    ("config", "memory", "cpu"),
    [
        (
            {
                "TaskPlugin": "task/cgroup",
                "SelectTypeParameters": "CR_CPU_MEMORY",
                "ConstrainRAMSpace": "yes",
                "ConstrainCores": "yes",
            },
            True,
            True,
        ),
        # Memory is not a consumable resource: --mem sets no limit at all.
        (
            {
                "TaskPlugin": "task/cgroup",
                "SelectTypeParameters": "CR_CPU",
                "ConstrainRAMSpace": "yes",
            },
            False,
            False,
        ),
        (
            {"TaskPlugin": "task/affinity,task/cgroup", "SelectTypeParameters": "CR_Core"},
            False,
            True,
        ),
        ({"TaskPlugin": "task/none", "SelectTypeParameters": "CR_CPU_Memory"}, False, False),
    ],
)
def test_limits_count_as_enforced_only_where_the_cluster_confines_jobs(
    config: dict[str, str], memory: bool, cpu: bool
) -> None:
    capabilities = ClusterCapabilities.from_config(config)
    assert (capabilities.memory_refusal is None) is memory
    assert (capabilities.cpu_refusal is None) is cpu
