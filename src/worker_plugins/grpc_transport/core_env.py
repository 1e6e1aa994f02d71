"""The environment gRPC core reads once, when ``grpc`` is imported: TLS 1.2 suites, log level.

Setting either variable after ``import grpc`` has no effect (measured for both), so the
package ``__init__`` sets them before any of its modules imports ``grpc``, and ``worker
serve`` re-executes itself if something imported ``grpc`` earlier.
"""

from __future__ import annotations

import os
import sys

import click

from .cipher_policy import apply_cipher_policy, policy_in_force

VERBOSITY_ENV = "GRPC_VERBOSITY"

#: gRPC core's own log stays off: every failure it would log (a port that cannot be bound, a
#: refused handshake) reaches the user as our own one-line message, and a second line in
#: another format only confuses. ``GRPC_VERBOSITY=ERROR`` (or ``DEBUG``) in the environment
#: turns it back on for diagnosis.
DEFAULT_VERBOSITY = "NONE"

#: Set in the environment of a re-executed ``serve`` so it re-executes at most once.
_REEXEC_MARK = "WORKER_SERVE_REEXEC"


def apply_core_environment() -> None:
    """Set the variables gRPC core reads at import, unless the environment chose them."""
    os.environ.setdefault(VERBOSITY_ENV, DEFAULT_VERBOSITY)
    apply_cipher_policy()


def ensure_core_environment() -> None:
    """Re-execute this process if ``grpc`` was imported before the variables were set.

    Another plugin loaded by ``worker`` before this package may have imported ``grpc`` first.
    The new process inherits the variables, so its gRPC starts with them. Call it before
    anything else of the server is set up: ``exec`` keeps the PID (a service manager sees
    the same process) and drops everything else.
    """
    apply_core_environment()
    if policy_in_force():
        return
    if os.environ.get(_REEXEC_MARK):
        click.echo("worker serve: warning: the TLS 1.2 cipher policy is not in force", err=True)
        return
    os.environ[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
