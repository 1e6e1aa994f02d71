"""The state metrics, read when Prometheus scrapes: jobs by state and the queue's depth.

A custom collector rather than gauges set from hooks: these are values the engine (and the
plugin's :class:`~.tracker.JobTracker`) hold already, so a scrape reads them as they are now
and nothing can drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .tracker import JobTracker


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    jobs = GaugeMetricFamily(
        "worker_jobs", "Unfinished jobs of this engine, by state.", labels=["state"]
    )
    depth = GaugeMetricFamily(
        "worker_queue_depth", "Jobs waiting in the scheduler's queue (QUEUED; HELD not counted)."
    )
    return jobs, depth


class EngineCollector(Collector):
    """Yields ``worker_jobs{state}`` and ``worker_queue_depth`` at every scrape."""

    def __init__(self, tracker: JobTracker, queue_depth: Callable[[], int]) -> None:
        self._tracker = tracker
        self._queue_depth = queue_depth

    def describe(self) -> Iterator[Metric]:
        # Names only: the registry checks them for duplicates without collecting.
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        jobs, depth = _families()
        for state, count in self._tracker.by_state().items():
            jobs.add_metric([state.value], count)
        depth.add_metric([], self._queue_depth())
        yield jobs
        yield depth
