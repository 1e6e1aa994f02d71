"""worker-allowlist: an example third-party plugin for ``worker`` that limits which commands
each principal may submit.

Enable it with ``--plugins allowlist`` (usually beside ``rbac``); see
:mod:`worker_allowlist.plugin` for the rules and how it composes with other authorizers.
"""

from __future__ import annotations

from .plugin import AllowlistConfig, AllowlistPlugin, Program

__all__ = ["AllowlistConfig", "AllowlistPlugin", "Program"]
