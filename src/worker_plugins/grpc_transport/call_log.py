"""What the guard records of each RPC: one log line, one latency sample, and each denial.

- ``worker.calls``, INFO, one line per call when it ends: the caller's Common Name, the
  method, the job (the full id from the answer where it carries one, else the id or prefix
  the request named), the status code's name, and the duration in milliseconds (a
  stream's whole life). Shown with ``worker -v``; fields ``principal``, ``method``, ``job``,
  ``code``, ``duration_ms`` in JSON lines.
- ``worker.authz``, WARNING, each authorization denial (:mod:`worker_plugins.denials`, the
  same line from every transport).
- ``worker_rpc_duration_seconds{method,code}`` of the ``metrics`` plugin, through
  :func:`worker_plugins.metrics.record_rpc`, which does nothing unless the plugin runs.

Refused TLS handshakes (no client certificate, another CA, an expired one) never reach this
code: gRPC core ends them before any call exists, and grpcio has no hook or callback that
tells Python about them. Only gRPC core's own log shows them, with the reason and without
the peer's address: ``GRPC_VERBOSITY=INFO`` in the server's environment gives one line per
refusal (``ssl_transport_security.cc ... Handshake failed with error ...``), and
``GRPC_TRACE=handshaker`` adds the handshake manager's view; both go to stderr in gRPC's
own format (measured with grpcio 1.85; ``GRPC_VERBOSITY=ERROR`` does not show them). See
``docs/DEPLOYMENT.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from worker_core.plugin import PermissionDenied
from worker_plugins.denials import log_denial, loggable

calls_log = logging.getLogger("worker.calls")


def _no_metrics(method: str, code: str, seconds: float) -> None:
    return None


record_rpc: Callable[[str, str, float], None]
try:  # the metrics plugin is optional: without it, the guard only logs
    from worker_plugins.metrics import record_rpc
except ImportError:
    record_rpc = _no_metrics


def _answer_job_id(response: Any) -> str | None:
    """The job an answer is about: ``response.job.id`` (Submit, Get, Stop, ...) or
    ``response.id`` (Watch's Job messages); None for the others."""
    job = getattr(response, "job", None)
    found = getattr(job if job is not None else response, "id", None)
    return found if isinstance(found, str) and found else None


class CallLog:
    """One RPC being served: filled in by the guard as it learns, written once at its end."""

    __slots__ = ("_started", "job", "method", "principal")

    def __init__(self, method: str) -> None:
        #: The method's short name, ``"Submit"`` for ``/worker.v1.Worker/Submit``. Names come
        #: from the registered handlers only (an unknown method never gets this far), so they
        #: are a fixed set, fit for a metric label.
        self.method = method.rpartition("/")[2]
        self.principal: str | None = None
        self.job: str | None = None
        self._started = time.monotonic()

    def request(self, request: Any) -> None:
        """Note the job the request names, if it names one."""
        job_id = getattr(request, "job_id", None)
        if isinstance(job_id, str) and job_id:
            self.job = loggable(job_id)

    def response(self, response: Any) -> None:
        """Note the job the answer is about: its full id, where the request had a prefix."""
        job_id = _answer_job_id(response)
        if job_id is not None:
            self.job = job_id

    def failed(self, exc: Exception) -> None:
        """The handler raised ``exc``: a denial is logged (the call line follows at the end)."""
        if isinstance(exc, PermissionDenied):
            log_denial(self.principal, self.method, self.job, exc)

    def finish(self, code: grpc.StatusCode) -> None:
        """The call ended with ``code``: count it, and log it at INFO."""
        seconds = time.monotonic() - self._started
        record_rpc(self.method, code.name, seconds)
        if not calls_log.isEnabledFor(logging.INFO):
            return
        duration_ms = round(seconds * 1000, 1)
        on_job = f" job={self.job}" if self.job else ""
        calls_log.info(
            "%s principal=%s%s code=%s duration_ms=%.1f",
            self.method,
            loggable(self.principal or "-"),
            on_job,
            code.name,
            duration_ms,
            extra={
                "principal": self.principal,
                "method": self.method,
                "job": self.job,
                "code": code.name,
                "duration_ms": duration_ms,
            },
        )
