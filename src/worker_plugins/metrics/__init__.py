"""Prometheus metrics for an engine: ``[plugins.metrics] listen = "127.0.0.1:9464"``.

:mod:`.plugin` is the plugin (hooks, lifecycle); :mod:`.tracker` keeps the unfinished jobs'
states from ``on_state_change``; :mod:`.collector` turns state into gauges at each scrape;
:mod:`.instruments` holds the counters and histograms; :mod:`.server` is the HTTP endpoint;
:mod:`.rpc` is what transports call, :func:`record_rpc`. Importing this package does not
import ``prometheus_client``.
"""

from .rpc import record_rpc

__all__ = ["record_rpc"]
