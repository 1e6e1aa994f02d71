"""Two engines must not share a cgroup parent: startup cleanup would kill the other's jobs."""

from __future__ import annotations

import uuid

import pytest

from worker_core import Config, ConfigError, Engine, JobSpec


def test_second_engine_on_the_same_parent_is_refused_and_can_start_after_the_first_closes() -> None:
    parent = f"worker-test-lock-{uuid.uuid4().hex[:8]}"
    config = Config.from_mapping({"plugins": {"cgroups": {"parent": parent}}})
    with Engine(["cgroups"], config) as first:
        job = first.submit(JobSpec("/bin/sleep", args=["5"]))
        with pytest.raises(ConfigError, match=f"another worker engine.*{parent}"):
            Engine(["cgroups"], config)
        assert first.get(job.id).state.value == "running", (
            "the refused engine must not touch our jobs"
        )
        first.stop(job.id, grace=0)
    with Engine(["cgroups"], config) as second:
        assert second.wait(second.submit(JobSpec("/bin/true")).id, timeout=10).exit_code == 0
