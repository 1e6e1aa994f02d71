"""Several nodes: two slurmd, each in a network and UTS namespace of its own with an address
the test made, and jobs placed by Slurm on both (the engine hands them over at once;
Slurm decides where and when they run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from slurm_harness import SlurmCluster, start_cluster
from slurm_helpers import WAIT, assert_cluster_gone, gate, require_slurm, sh, slurm_config

from worker_core import EndReason, Engine, Limits

MIB = 1 << 20


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[SlurmCluster]:
    require_slurm()
    cluster = start_cluster(nodes=2)
    try:
        yield cluster
    finally:
        cluster.stop()
    assert_cluster_gone(cluster)


def test_jobs_are_spread_over_the_nodes_by_slurm(two_nodes: SlurmCluster, tmp_path: Path) -> None:
    path, wait_for_gate = gate(tmp_path, "go")
    # Each node has 8000 MiB for jobs: two jobs of 5000 MiB cannot share one.
    big = Limits(memory_max=5000 * MIB)
    with Engine(["slurm"], slurm_config(two_nodes, tmp_path)) as engine:
        jobs = [engine.submit(sh(f"hostname; {wait_for_gate}", limits=big)) for _ in range(3)]
        ids = [engine.get(job.id).external_id for job in jobs]
        assert all(ids)

        def slurm_states() -> list[str]:
            return [two_nodes.squeue(str(i), "State") for i in ids]

        # Two run at once, one on each node; the third waits in Slurm's queue for room.
        two_running = ["PENDING", "RUNNING", "RUNNING"]
        assert wait_until(lambda: sorted(slurm_states()) == two_running, WAIT), slurm_states()
        placed = {two_nodes.squeue(str(i), "NodeList") for i in ids} - {""}
        assert placed == set(two_nodes.nodes)
        waiting = slurm_states().index("PENDING")
        pending = ids[waiting]
        assert two_nodes.squeue(str(pending), "Reason") == "Resources"
        # Stopping a job Slurm has not started cancels it there (there is nothing to signal).
        stopped = engine.stop(jobs[waiting].id, grace=5, timeout=WAIT)
        assert stopped.end_reason is EndReason.STOPPED
        assert two_nodes.squeue(str(pending), "State") == "CANCELLED"
        path.touch()
        ended = [engine.wait(job.id, WAIT) for i, job in enumerate(jobs) if i != waiting]
    assert [job.end_reason for job in ended] == [EndReason.EXITED] * 2
    assert all(job.exit_code == 0 for job in ended)
    # Each ran in its node's own namespaces: its hostname is the node Slurm reports.
    for job in ended:
        assert engine.output(job.id) == f"{job.facts['slurm_nodes']}\n".encode()
    assert {job.facts["slurm_nodes"] for job in ended} == set(two_nodes.nodes)
