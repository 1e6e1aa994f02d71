"""worker-audit: an example third-party plugin for ``worker`` that writes an audit log, one
JSON line per job lifecycle event and per authorization decision.

Enable it with ``--plugins audit`` and set ``[plugins.audit] path``; see
:mod:`worker_audit.plugin` for the line format.
"""

from __future__ import annotations

from .plugin import AuditConfig, AuditLog, AuditPlugin

__all__ = ["AuditConfig", "AuditLog", "AuditPlugin"]
