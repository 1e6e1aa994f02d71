"""A worker that dies while its Slurm jobs run: the next one follows them again.

The first engine runs in a process of its own (sqlite records, spool output, the slurm
executor) and is killed with SIGKILL: nothing of it is stopped or flushed on the way out.
Its Slurm jobs go on meanwhile, one writing more output, one ending. A new engine on the
same state directory finds both still known to Slurm: it follows the running one from the
offsets its output store kept (every byte exactly once) and reports how the other ended.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import wait_until
from slurm_harness import SlurmCluster
from slurm_helpers import WAIT, gate, slurm_config, slurm_settings

from worker_core import EndReason, Engine, JobSpec, JobState, Stream

FIRST_ENGINE = """
import json, sys, time
from worker_core import Config, Engine, JobSpec
config = Config.from_mapping(json.loads(sys.argv[1]))
engine = Engine(["sqlite", "spool", "slurm"], config).start()
jobs = [engine.submit(JobSpec("sh", args=["-c", script])) for script in sys.argv[2:]]
print(" ".join(job.id for job in jobs), flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(engine.output(j.id) for j in jobs):
    time.sleep(0.05)
print("seen", flush=True)
time.sleep(120)  # the test kills this process long before
"""


def test_a_restarted_worker_follows_its_slurm_jobs_again(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # No output_dir: its default, under the state directory.
    settings = slurm_settings(
        slurm_cluster, tmp_path, engine={"state_dir": str(state)}, output_dir=None
    )
    go_on, wait_go_on = gate(tmp_path, "go-on")
    finish, wait_finish = gate(tmp_path, "finish")
    end_b, wait_end_b = gate(tmp_path, "end-b")
    running = f"echo one; {wait_go_on}; echo two; {wait_finish}; echo three; echo done >&2; exit 5"
    ending = f"echo b1; {wait_end_b}; echo b2; exit 7"
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_ENGINE, json.dumps(settings), running, ending],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None
        job_a, job_b = first.stdout.readline().split()
        assert first.stdout.readline().strip() == "seen"
    finally:
        first.kill()
        first.wait(10)
        if first.stdout is not None:
            first.stdout.close()
    # With no worker: job A writes more, job B ends.
    go_on.touch()
    end_b.touch()
    out_a = state / "slurm-output" / f"{job_a}.out"
    assert wait_until(lambda: b"two" in out_a.read_bytes(), WAIT)
    config = slurm_config(
        slurm_cluster, tmp_path, engine={"state_dir": str(state)}, output_dir=None
    )
    with Engine(["sqlite", "spool", "slurm"], config) as again:
        record_a = again.get(job_a)
        assert record_a.state is JobState.RUNNING and record_a.external_id is not None
        assert slurm_cluster.squeue(record_a.external_id, "State") == "RUNNING"
        assert wait_until(lambda: again.output(job_a) == b"one\ntwo\n", WAIT)
        finish.touch()
        ended_a = again.wait(job_a, WAIT)
        assert ended_a.end_reason is EndReason.EXITED and ended_a.exit_code == 5
        assert again.output(job_a) == b"one\ntwo\nthree\n"
        assert again.output(job_a, Stream.STDERR) == b"done\n"
        ended_b = again.wait(job_b, WAIT)
        assert ended_b.end_reason is EndReason.EXITED and ended_b.exit_code == 7
        assert again.output(job_b) == b"b1\nb2\n"
        # New jobs run as usual beside the recovered ones.
        fresh = again.submit(JobSpec("sh", args=["-c", "echo fresh"]))
        assert again.wait(fresh.id, WAIT).exit_code == 0
    with Engine(["sqlite", "spool", "slurm"], config) as after:
        assert after.get(job_a).end_reason is EndReason.EXITED
        assert after.output(job_a) == b"one\ntwo\nthree\n"
