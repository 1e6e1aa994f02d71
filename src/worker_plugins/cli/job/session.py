"""What every ``worker job`` command shares: the connection, and failing in one line.

The gRPC client is imported when a command connects, not when the commands are defined, so
``worker job --help`` and a usage error cost no gRPC import.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from worker_plugins.cli.exit_status import EXIT_INTERRUPTED

from .connection import ConnectionFlags, diagnose, resolve
from .errors import ClientError

if TYPE_CHECKING:
    from .client import WorkerClient

F = TypeVar("F", bound=Callable[..., Any])

PREFIX = "worker job"


def fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"{PREFIX}: error: {message}", err=True)
    sys.exit(exit_code)


def reports_errors(command: F) -> F:
    """Turn every expected failure into one line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ClientError as exc:
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            # Ctrl-C only ever ends this client; a remote job is left as it is.
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # `worker job tail ID | head`: the reader is gone, which is not an error here.
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


def connect(flags: ConnectionFlags) -> WorkerClient:
    """A client of the server the flags (then the environment, then the config) name."""
    settings = resolve(flags)
    from .client import WorkerClient
    from .connection import open_channel

    return WorkerClient(open_channel(settings), settings.server, lambda: diagnose(settings.tls))


def on_terminal() -> bool:
    """Whether a person is likely watching: stderr is a terminal (not a pipe or a file)."""
    return sys.stderr.isatty()


def note(message: str) -> None:
    """A progress line for a person at a terminal; nothing when stderr is piped."""
    if on_terminal():
        click.echo(f"{PREFIX}: {message}", err=True)
