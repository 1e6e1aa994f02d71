"""The allocator settings `worker serve` applies, checked in a fresh interpreter each time
(they are process-wide: this test process keeps glibc's defaults)."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import TUNED_PRELUDE, run_python

from worker_core import _allocator as allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc")


def test_tuned_pipe_reads_do_not_map_fresh_memory_each_time() -> None:
    # The output pump's pattern: os.read(fd, 1 MiB) on a pipe holding 16 KiB allocates a
    # 1 MiB buffer, shrinks it to what was read, and frees it later. With glibc's defaults
    # each read maps fresh memory (and faults its pages in); tuned, the heap is reused.
    # Counted by the process's minor page faults.
    code = """
        import os, resource, sys
        from worker_core import _allocator as allocator
        if sys.argv[1] == "tuned":
            assert allocator.tune_for_streaming()
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        r, w = os.pipe()
        block = b"x" * (16 << 10)
        for _ in range(10):  # warm up
            os.write(w, block)
            os.read(r, 1 << 20)
        before = faults()
        for _ in range(2000):
            os.write(w, block)
            os.read(r, 1 << 20)
        print(faults() - before)
    """
    default = int(run_python(code, "default"))
    tuned = int(run_python(code, "tuned"))
    assert default >= 2000, "expected at least a fault per read with glibc's defaults"
    assert tuned < 200


def test_free_memory_goes_back_to_the_kernel_when_released() -> None:
    code = """
        # ~100 MiB in 100 KiB pieces: under TRIM_THRESHOLD, so kept for reuse when freed.
        held = [bytes([1]) * (100 << 10) for _ in range(1000)]
        peak = rss_mib()
        del held
        gc.collect()
        kept = rss_mib()  # tuned: the freed memory stays for reuse
        allocator.release_free_memory()
        print(peak, kept, rss_mib())
    """
    peak, kept, released = map(int, run_python(code, prelude=TUNED_PRELUDE).split())
    assert peak >= 100
    assert kept >= peak - 10, "the tuned allocator gave memory back on free"
    assert released <= peak - 90, f"release_free_memory left {released} of {peak} MiB"


def test_background_releases_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many requests while a release runs make it run once more, not once each. The first
    # release is held until all the requests are in, however slowly they come.
    runs: list[None] = []
    started = threading.Event()
    go_on = threading.Event()

    def held_release() -> bool:
        runs.append(None)
        started.set()
        go_on.wait(10)
        return True

    monkeypatch.setattr(allocator, "release_free_memory", held_release)
    try:
        allocator.release_free_memory_soon()
        assert started.wait(10), "the background release did not start"
        for _ in range(20):
            allocator.release_free_memory_soon()
    finally:
        go_on.set()
    deadline = time.monotonic() + 10
    while allocator._releaser is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert allocator._releaser is None, "the background release did not finish"
    assert len(runs) == 2


def test_held_free_memory_is_measured_and_released_past_a_limit() -> None:
    # What `worker serve` does every 10 s: buffers freed after a burst go back to the kernel
    # once more than the limit is held free.
    code = """
        # ~100 MiB: under TRIM_THRESHOLD, so all of it stays held when freed, wherever it is.
        burst = [bytes([i % 256]) * (100 << 10) for i in range(1000)]
        peak = rss_mib()
        del burst
        free = allocator.free_bytes() >> 20
        assert not allocator.release_if_free_above(1 << 40), "released under the limit"
        assert allocator.release_if_free_above(64 << 20)
        deadline = time.monotonic() + 10
        while rss_mib() > peak - 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        print(peak, free, rss_mib())
    """
    peak, free, after = map(int, run_python(code, prelude=TUNED_PRELUDE).split())
    assert free >= 90, f"only {free} MiB counted free after freeing ~100 MiB"
    assert after <= peak - 80, f"{after} MiB still resident of {peak} MiB"
