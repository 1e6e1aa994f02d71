"""RPC latency for transports: :func:`record_rpc`, the one call a transport makes.

A transport does not know which engine's plugin object is ``metrics`` (the gRPC server's
interceptor holds no engine), so every ``metrics`` plugin that is running registers here
while it serves, and :func:`record_rpc` feeds each of them. A server process runs one engine;
a process with several engines and one transport has no way to tell which engine a call
belonged to, and counts it in each. Nothing here imports ``prometheus_client``: a transport
may call this whether the plugin is enabled or not, and it then costs one empty loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

#: ``(method, code, seconds) -> None`` of one running plugin.
RpcSink = Callable[[str, str, float], None]

_lock = threading.Lock()
# Replaced, never changed in place, so record_rpc reads it without the lock.
_sinks: tuple[RpcSink, ...] = ()


def record_rpc(method: str, code: str, seconds: float) -> None:
    """Count one RPC in ``worker_rpc_duration_seconds{method, code}`` of every running
    ``metrics`` plugin; does nothing when none runs.

    ``method`` is the RPC's short name (``"Submit"``, ``"Tail"``), ``code`` its status code's
    name (``"OK"``, ``"NOT_FOUND"``), ``seconds`` how long it took, from the call's arrival to
    its status (a stream's whole life). Label values are taken as given: pass only names
    from a fixed set, never client input. Never raises; safe from any thread or event loop.
    """
    for sink in _sinks:
        try:
            sink(method, code, seconds)
        except Exception:  # a metric must never fail the call it measures
            continue


def add_sink(sink: RpcSink) -> None:
    """Feed ``sink`` with every RPC recorded from now on."""
    global _sinks
    with _lock:
        _sinks = (*_sinks, sink)


def remove_sink(sink: RpcSink) -> None:
    """Stop feeding ``sink`` (a plugin that shut down); unknown sinks are ignored."""
    global _sinks
    with _lock:
        _sinks = tuple(s for s in _sinks if s != sink)
