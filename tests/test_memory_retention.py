"""The memory broker's per-job cap: bounded memory, a follower that keeps up loses nothing,
and one that falls further behind than the cap continues from the oldest kept chunk, with the
gap visible in the offsets."""

from __future__ import annotations

import sys
import threading

from worker_core import Chunk, Config, Engine, JobSpec, StartAt, Stream

CAP = 2 << 20
TOTAL = 8 << 20
# Writes 8 MiB in 256 KiB pieces, steadily, as a real job would.
STEADY_WRITER = (
    "import sys, time\n"
    "time.sleep(0.3)\n"
    "for _ in range(32):\n"
    "    sys.stdout.buffer.write(b'x' * (256 << 10)); sys.stdout.flush(); time.sleep(0.01)\n"
)


def test_retention_cap_keeps_memory_bounded_without_starving_live_followers() -> None:
    config = Config.from_mapping({"plugins": {"memory": {"max_bytes_per_job": CAP}}})
    with Engine(config=config) as engine:
        job = engine.submit(JobSpec(sys.executable, args=["-c", STEADY_WRITER]))
        stalled = engine.follow(job.id)  # attached now, reads only after the job has ended
        live: list[Chunk] = []
        follower = engine.follow(job.id, start=StartAt.END)
        reader = threading.Thread(target=lambda: live.extend(follower))
        reader.start()
        reader.join(20)
        assert not reader.is_alive()
        assert sum(len(c.data) for c in live) == TOTAL, "a follower that keeps up loses nothing"
        assert engine.wait(job.id, 10).exit_code == 0

        behind = list(stalled)
        kept = sum(len(c.data) for c in behind)
        assert 0 < kept <= CAP + (1 << 20)  # the cap, give or take the newest chunk
        assert behind[0].offset == TOTAL - kept, "the first offset shows how much was dropped"
        assert behind[-1].end == TOTAL
        offsets = [c.offset for c in behind]
        assert offsets == sorted(offsets)
        assert engine.output(job.id, Stream.STDOUT) == b"x" * kept


def test_overall_budget_drops_the_output_of_the_longest_finished_jobs_first() -> None:
    config = Config.from_mapping({"plugins": {"memory": {"max_total_bytes": 3 << 20}}})
    writer = "import sys; sys.stdout.buffer.write(b'y' * (1 << 20))"
    with Engine(config=config) as engine:
        jobs = []
        for _ in range(5):
            job = engine.submit(JobSpec(sys.executable, args=["-c", writer]))
            assert engine.wait(job.id, 10).exit_code == 0
            jobs.append(job.id)
        store = engine.plugin_manager.get_plugin("memory")
        assert store.kept_bytes() <= 3 << 20
        kept = [len(engine.output(job_id)) for job_id in jobs]
        assert kept[-1] == 1 << 20, "the newest output is kept"
        assert kept[0] == 0, "the longest-finished job's output went first"
        assert engine.get(jobs[0]).exit_code == 0, "its record stays"
