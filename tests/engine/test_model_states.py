"""The job model: the state machine and the validators on specs and limits.

States move forward, except the two pairs a user moves back and forth on purpose: a held job
is released to the queue (and a queued one may be held), a paused job resumes.
"""

from __future__ import annotations

import itertools
import math

import pytest

from worker_core import IllegalTransition, InvalidSpec, Job, JobSpec, JobState, Limits
from worker_core._model import ALLOWED_TRANSITIONS, IOLimit, Isolation, transition

FORWARD = {
    (JobState.QUEUED, JobState.HELD),
    (JobState.QUEUED, JobState.PENDING),
    (JobState.QUEUED, JobState.ENDED),  # stopped, or a dependency failed: it never runs
    (JobState.HELD, JobState.QUEUED),  # released
    (JobState.HELD, JobState.ENDED),
    (JobState.RUNNING, JobState.PAUSED),
    (JobState.PAUSED, JobState.RUNNING),  # resumed
    (JobState.PAUSED, JobState.STOPPING),
    (JobState.PAUSED, JobState.ENDED),
    (JobState.PENDING, JobState.RUNNING),
    (JobState.PENDING, JobState.STOPPING),
    (JobState.PENDING, JobState.ENDED),
    (JobState.RUNNING, JobState.STOPPING),
    (JobState.RUNNING, JobState.ENDED),
    (JobState.STOPPING, JobState.ENDED),
}


def job_in(state: JobState) -> Job:
    return Job(id="j", owner=None, spec=JobSpec("/bin/true"), state=state)


def test_allowed_transitions_are_exactly_the_listed_moves() -> None:
    allowed = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    assert allowed == FORWARD


@pytest.mark.parametrize(("before", "after"), sorted(FORWARD, key=str))
def test_a_forward_transition_returns_a_new_snapshot_with_the_changes(
    before: JobState, after: JobState
) -> None:
    job = job_in(before)
    moved = transition(job, after, pid=42, message="m")
    assert (moved.state, moved.pid, moved.message) == (after, 42, "m")
    assert job.state is before, "snapshots are immutable"


@pytest.mark.parametrize(
    ("before", "after"),
    sorted(set(itertools.product(JobState, JobState)) - FORWARD, key=str),
)
def test_every_other_transition_raises_illegal_transition(
    before: JobState, after: JobState
) -> None:
    with pytest.raises(IllegalTransition, match=f"{before.value} -> {after.value}"):
        transition(job_in(before), after)


def test_ended_is_final() -> None:
    assert ALLOWED_TRANSITIONS[JobState.ENDED] == frozenset()
    assert job_in(JobState.ENDED).is_finished
    assert not any(job_in(s).is_finished for s in JobState if s is not JobState.ENDED)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"memory_max": 0}, "limits.memory_max"),
        ({"memory_max": -1}, "limits.memory_max"),
        ({"memory_high": 0}, "limits.memory_high"),
        ({"pids_max": 0}, "limits.pids_max"),
        ({"cpu": 0}, "limits.cpu"),
        ({"cpu": -0.5}, "limits.cpu"),
        ({"cpu": math.nan}, "limits.cpu"),
        ({"cpu": math.inf}, "limits.cpu"),
        ({"cpu_weight": 0}, "limits.cpu_weight"),
        ({"io_weight": 10001}, "limits.io_weight"),
        ({"memory_max": True}, "limits.memory_max"),
        ({"memory_max": 1.5}, "limits.memory_max"),
    ],
)
def test_zero_negative_or_mistyped_limits_raise_invalid_spec_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        Limits(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_io_limit_and_isolation_and_timeout_validators_name_their_fields() -> None:
    with pytest.raises(InvalidSpec) as info:
        IOLimit("/dev/vda", read_bps=0)
    assert info.value.field == "limits.io.read_bps"
    with pytest.raises(InvalidSpec) as info:
        Isolation(uid=-1)
    assert info.value.field == "isolation.uid"
    with pytest.raises(InvalidSpec) as info:
        JobSpec("/bin/true", timeout=0)
    assert info.value.field == "timeout"


def test_spec_copies_its_env_so_later_mutation_by_the_caller_changes_nothing() -> None:
    env = {"A": "1"}
    spec = JobSpec("/bin/true", args=["x"], env=env)
    env["A"] = "2"
    assert spec.env == {"A": "1"}
    assert spec.args == ("x",)


def test_set_fields_lists_every_limit_that_is_set() -> None:
    limits = Limits(memory_max=1 << 20, cpu=0.5, io=[IOLimit("8:0", read_bps=1)])
    assert limits.set_fields() == ["limits.memory_max", "limits.cpu", "limits.io"]
    assert Limits().set_fields() == []


def test_specs_and_job_records_are_values_but_deliberately_unhashable() -> None:
    # They hold mappings (env, options, facts), so they compare by value but are not hashable;
    # the error names the class, not an inner dict. Key jobs by job.id.
    spec = JobSpec("/bin/true", env={"A": "1"})
    assert spec == JobSpec("/bin/true", env={"A": "1"})
    with pytest.raises(TypeError, match="JobSpec"):
        hash(spec)
    with pytest.raises(TypeError, match="Job"):
        hash(job_in(JobState.ENDED))
