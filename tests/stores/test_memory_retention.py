"""The memory output store's per-job cap: bounded memory, a follower that keeps up loses nothing,
and one that falls further behind than the cap continues from the oldest kept chunk, with the
gap visible in the offsets."""

from __future__ import annotations

import sys
import threading

from helpers import TUNED_PRELUDE, run_python

from worker_core.plugin import Chunk, Config, Engine, JobSpec, StartAt, Stream

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
        store = engine.plugin_manager.get_plugin("memory").output
        assert store.kept_bytes() <= 3 << 20
        kept = [len(engine.output(job_id)) for job_id in jobs]
        assert kept[-1] == 1 << 20, "the newest output is kept"
        assert kept[0] == 0, "the longest-finished job's output went first"
        assert engine.get(jobs[0]).exit_code == 0, "its record stays"


_DISCARD_SCRIPT = """
from worker_core.plugin import Chunk, Stream
from worker_plugins.memory import output as store_module

if sys.argv[1] == "never-release":
    store_module.RELEASE_AFTER_BYTES = 1 << 62

store = store_module.MemoryOutputStore()
for job_id in ("big", "small"):
    store.open(job_id)
size = 64 << 10
for i in range(1600):  # 100 MiB for "big", interleaved with a chunk of "small" that stays
    piece = bytes([i % 256]) * size  # a new buffer each time, as every pipe read is
    store.append(Chunk("big", Stream.STDOUT, i * size, piece))
    store.append(Chunk("small", Stream.STDOUT, i * 100, b"y" * 100))
peak = rss_mib()
store.close("big")
store.discard("big")
# The release runs on a background thread: give it a bounded while.
deadline = time.monotonic() + (10 if sys.argv[1] == "default" else 1)
while rss_mib() > peak - 80 and time.monotonic() < deadline:
    time.sleep(0.05)
print(peak, rss_mib())
"""


def _rss_around_a_discard(mode: str) -> tuple[int, int]:
    # Tuned as `worker serve` runs.
    peak, after = map(int, run_python(_DISCARD_SCRIPT, mode, prelude=TUNED_PRELUDE).split())
    return peak, after


def test_a_discarded_jobs_output_goes_back_to_the_kernel() -> None:
    # With the allocator tuned as `worker serve` tunes it, memory freed between live
    # buffers (here the small job's chunks) stays with the process until released: the
    # store releases it after dropping 64 MiB or more. The control run shows the release
    # is what returns it.
    peak, after = _rss_around_a_discard("default")
    assert peak >= 100
    assert after <= peak - 80, f"{after} MiB still resident of {peak} MiB"
    peak, kept = _rss_around_a_discard("never-release")
    assert kept >= peak - 20, "without a release the freed output would stay resident"
