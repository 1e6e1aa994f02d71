"""The event metrics: counters and histograms, fed by the plugin's hooks and by transports.

Imports ``prometheus_client``; the plugin imports this module only once it has checked that
the package is installed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from worker_core.plugin import EndReason, Stream

#: Spawn latency buckets, seconds: a plain fork and exec takes about a millisecond here, a
#: job with cgroups and namespaces a few; the top ones catch a launcher under load.
SPAWN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: RPC latency buckets, seconds. A streaming call (Tail, Watch) lasts as long as its stream,
#: so the buckets go up to an hour.
RPC_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)


class Instruments:
    """Every event metric of one engine, in ``registry``.

    Label children for the values known in advance (end reasons, streams) are made here, so
    each series exists from the start (at 0) and the hot paths skip the label lookup.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.submitted = Counter(
            "worker_jobs_submitted",
            "Jobs accepted by submit (a repeated idempotency key counts once).",
            registry=registry,
        )
        self._ended_family = ended = Counter(
            "worker_jobs_ended",
            "Jobs that reached the ENDED state, by end reason.",
            ["reason"],
            registry=registry,
        )
        self._ended = {reason: ended.labels(reason=reason.value) for reason in EndReason}
        output = Counter(
            "worker_output_bytes",
            "Bytes of job output read from the jobs' pipes, by stream.",
            ["stream"],
            registry=registry,
        )
        self._output = {stream: output.labels(stream=stream.value) for stream in Stream}
        self.spawn = Histogram(
            "worker_spawn_duration_seconds",
            "Seconds from a job's admission (PENDING) to its process running (RUNNING).",
            buckets=SPAWN_BUCKETS,
            registry=registry,
        )
        self._rpc = Histogram(
            "worker_rpc_duration_seconds",
            "Seconds each RPC took, by method and status code; a stream's whole life.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )

    def ended(self, reason: EndReason | None) -> None:
        """Count one job that ended for ``reason``."""
        if reason is None:  # the engine always sets one; never drop the count if not
            self._ended_family.labels(reason="unknown").inc()
        else:
            self._ended[reason].inc()

    def output(self, stream: Stream, size: int) -> None:
        """Count ``size`` bytes read from ``stream``: a dict lookup and one locked add."""
        self._output[stream].inc(size)

    def rpc(self, method: str, code: str, seconds: float) -> None:
        """Observe one RPC of ``method`` that ended with status ``code`` after ``seconds``."""
        self._rpc.labels(method=method, code=code).observe(max(0.0, seconds))
