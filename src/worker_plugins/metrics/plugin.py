"""The ``metrics`` plugin: Prometheus text at ``/metrics`` for one engine.

Configuration::

    [plugins.metrics]
    listen = "127.0.0.1:9464"

Metrics, all prefixed ``worker_``:

- ``worker_jobs{state}`` (gauge): unfinished jobs by state (queued, held, pending, running,
  paused, stopping), read at each scrape;
- ``worker_queue_depth`` (gauge): jobs waiting in the scheduler's queue, read at each scrape;
- ``worker_jobs_submitted_total``, ``worker_jobs_ended_total{reason}`` (counters);
- ``worker_output_bytes_total{stream}`` (counter): bytes read from the jobs' stdout, stderr;
- ``worker_spawn_duration_seconds`` (histogram): admission (PENDING) to RUNNING, as the
  plugin sees the two transitions; a job queued first is measured from when it left the
  queue, not from its submit;
- ``worker_rpc_duration_seconds{method,code}`` (histogram): fed by transports through
  :func:`worker_plugins.metrics.record_rpc`;
- the ``process_*`` and ``python_*`` metrics of ``prometheus_client``'s standard collectors.

``prometheus_client`` is an optional dependency (``pip install prometheus_client``, or
worker's ``metrics`` extra); it is imported only when the plugin is configured, and its
absence is a :class:`PluginError` naming it. Each engine has its own registry, so two
engines in one process never share a series.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from worker_core.plugin import (
    Chunk,
    Config,
    Job,
    JobState,
    PluginError,
    hookimpl,
)

from . import rpc
from .config import MetricsConfig, parse_listen
from .tracker import UNFINISHED_STATES, JobTracker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from worker_core.plugin import Engine

    from .instruments import Instruments
    from .server import MetricsServer

log = logging.getLogger("worker.metrics")

SECTION = "metrics"


def _require_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise PluginError(
            "metrics: the 'prometheus_client' package is not installed "
            "(pip install prometheus_client, or worker's 'metrics' extra)"
        ) from None


class MetricsPlugin:
    """Counts jobs, output and RPCs, and serves them at ``/metrics`` while the engine runs.

    Construction is free of I/O and imports; ``configure`` builds the registry (so events
    fired during recovery, before ``startup``, are counted), ``startup`` binds the address
    and ``shutdown`` frees it.
    """

    name = SECTION
    config_class = MetricsConfig

    def __init__(self) -> None:
        self.config = MetricsConfig()
        self._tracker = JobTracker()
        self._instruments: Instruments | None = None
        self._registry: CollectorRegistry | None = None
        self._server: MetricsServer | None = None

    @property
    def address(self) -> str | None:
        """``host:port`` of the endpoint while it serves (the real port if 0 was asked)."""
        server = self._server
        return server.address if server is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    @hookimpl
    def configure(self, engine: Engine, config: Config) -> None:
        # ConfigError naming the key (``... @ $.plugins.metrics.listen``) on a bad section.
        self.config = config.section(SECTION, MetricsConfig)
        _require_prometheus_client()
        from prometheus_client import (
            GC_COLLECTOR,
            PLATFORM_COLLECTOR,
            PROCESS_COLLECTOR,
            CollectorRegistry,
        )

        from .collector import EngineCollector
        from .instruments import Instruments

        registry = CollectorRegistry(auto_describe=True)
        self._instruments = Instruments(registry)
        registry.register(EngineCollector(self._tracker, lambda: engine.queue_depth))
        # The process-wide standard collectors (CPU, memory, descriptors, GC): they read
        # /proc/self and the interpreter, the same for every registry.
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(standard)
        self._registry = registry

    @hookimpl
    def startup(self, engine: Engine) -> None:
        from .server import MetricsServer

        instruments = self._require_configured()
        assert self._registry is not None
        # What an earlier run left waiting came back without events: count it once.
        self._tracker.seed(engine.list(states=UNFINISHED_STATES))
        host, port = parse_listen(self.config.listen)
        self._server = MetricsServer.start(host, port, self._registry)
        rpc.add_sink(instruments.rpc)
        log.info("metrics: Prometheus text at http://%s/metrics", self._server.address)
        if not self._server.loopback:
            log.warning(
                "metrics: %s is reachable from other hosts, over plain HTTP without "
                "authentication (it shows job counts and RPC rates)",
                self._server.address,
            )

    @hookimpl
    def shutdown(self) -> None:
        if self._instruments is not None:
            rpc.remove_sink(self._instruments.rpc)
        server, self._server = self._server, None
        if server is not None:
            try:
                server.close()
            except Exception:  # never raise from shutdown: it would skip other plugins
                log.exception("metrics: stopping the HTTP server failed")

    def _require_configured(self) -> Instruments:
        if self._instruments is None:
            raise PluginError("metrics: the plugin was not configured")
        return self._instruments

    # -- events ------------------------------------------------------------------------------

    @hookimpl
    def on_state_change(self, job: Job, previous: JobState | None) -> None:
        instruments = self._instruments
        if instruments is None:
            return
        spawn_seconds = self._tracker.changed(job, previous)
        if previous is None:
            instruments.submitted.inc()
        if spawn_seconds is not None:
            instruments.spawn.observe(spawn_seconds)
        if job.state is JobState.ENDED:
            instruments.ended(job.end_reason)

    @hookimpl
    def on_output(self, chunk: Chunk) -> None:
        # The engine's one output thread serves every job: a dict lookup and an add.
        instruments = self._instruments
        if instruments is not None:
            instruments.output(chunk.stream, len(chunk.data))

    # -- for transports ------------------------------------------------------------------------

    def record_rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one RPC in this engine's ``worker_rpc_duration_seconds`` (see
        :func:`worker_plugins.metrics.record_rpc` for the arguments)."""
        self._require_configured().rpc(method, code, seconds)
