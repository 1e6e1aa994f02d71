"""What ``worker serve`` does on SIGHUP, and the certificates it watches for expiry.

Two optional capabilities, found by duck typing on the transports and on the engine's
plugins, so neither needs a new hook:

- :class:`Reloadable`: ``reload()`` reads its files again and puts them in force (the gRPC
  transport its certificate, key and CA; ``rbac`` its policy). It raises on files that do not
  load or validate, and then keeps what it had. SIGHUP reloads every one, each on its own:
  one failing leaves the others reloaded.
- :class:`PresentsCertificates`: ``certificates()`` names the certificates it serves and
  trusts, which serve warns about when they expire within 30 days (at start, then daily).

Neither touches a running job or an open stream: a reload changes what *new* connections
and calls see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeGuard, runtime_checkable

from worker_plugins.certs.expiry import expiry_warnings, now_utc

from .notify import notify
from .report import say

if TYPE_CHECKING:
    from cryptography import x509

    from worker_core.plugin import Engine

log = logging.getLogger("worker.serve")

#: How often the certificates are checked for expiry after the check at start.
EXPIRY_CHECK_SECONDS = 24 * 3600.0


@runtime_checkable
class Reloadable(Protocol):
    """A transport or plugin that can read its files again on SIGHUP."""

    def reload(self) -> str:
        """Load the files again and put them in force; say what is in force now (one line).

        Blocking is allowed: serve calls it on a worker thread. Raise with a message naming
        the file and the problem when they do not load; what was in force then stays.
        """
        ...


@runtime_checkable
class PresentsCertificates(Protocol):
    """A transport that serves and trusts certificates."""

    def certificates(self) -> Sequence[tuple[str, x509.Certificate]]:
        """``(what, certificate)`` pairs; ``what`` names it in a message ("the server
        certificate /etc/worker/server.pem")."""
        ...


def reloadables(engine: Engine, transports: Iterable[object]) -> list[tuple[str, Reloadable]]:
    """Every transport, then every plugin, that can reload, with its name for messages."""
    found: list[tuple[str, Reloadable]] = []
    for transport in transports:
        if _can_reload(transport):
            found.append((str(getattr(transport, "name", "transport")), transport))
    for name, plugin in engine.hooks.plugins():
        if _can_reload(plugin) and all(plugin is not r for _, r in found):
            found.append((name, plugin))
    return found


def _can_reload(candidate: object) -> TypeGuard[Reloadable]:
    # A plugin may be a module, whose `reload` could be anything (a submodule): only a
    # callable counts.
    return isinstance(candidate, Reloadable) and callable(getattr(candidate, "reload", None))


def _one_line(exc: BaseException) -> str:
    # A policy's problems come one per line: the log gets them on one.
    return (
        "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        or type(exc).__name__
    )


class Reloader:
    """Runs the reloads SIGHUP asks for on serve's loop, one round at a time.

    A SIGHUP arriving during a round asks for one more round after it (the files may have
    changed again meanwhile); any number of them make one. One arriving before
    :meth:`arm` (while the transports start) is kept for then: the files may have changed
    since they were read.
    """

    def __init__(self) -> None:
        self._targets: list[tuple[str, Reloadable]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False
        #: Rounds finished, for tests and diagnostics.
        self.rounds = 0

    def arm(self, targets: Sequence[tuple[str, Reloadable]]) -> None:
        """From now on reload ``targets``; run a round now if one was asked for already."""
        self._targets = list(targets)
        if self._again:
            self.request()

    def request(self) -> None:
        """Reload soon (the SIGHUP handler: returns at once)."""
        if self._closed:
            return  # stopping: the transports are going away
        if self._targets is None or (self._task is not None and not self._task.done()):
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Refuse further rounds; wait for one under way (bounded by its files' reads)."""
        self._closed = True
        self._again = False
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.reload_all()
            if not self._again or self._closed:
                return

    async def reload_all(self) -> list[str]:
        """One round: reload every target, each on its own; the failures' messages."""
        notify(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))
        failures: list[str] = []
        for name, target in self._targets or ():
            try:
                loaded = await asyncio.to_thread(target.reload)
            except Exception as exc:
                message = f"reload: {name}: {_one_line(exc)}; the previous settings stay in force"
                log.error("%s", message)
                failures.append(message)
            else:
                line = f"reloaded {name}: {loaded}"
                say(line)
                log.info("%s", line)
        self.rounds += 1
        status = "serving; the last reload failed" if failures else "serving; reloaded"
        notify(READY="1", STATUS=status)
        return failures


def certificate_warnings(transports: Iterable[object]) -> list[str]:
    """The expiry warnings for every certificate the transports serve or trust now."""
    named: list[tuple[str, x509.Certificate]] = []
    for transport in transports:
        if isinstance(transport, PresentsCertificates):
            name = getattr(transport, "name", "transport")
            named.extend((f"{name}: {what}", cert) for what, cert in transport.certificates())
    return expiry_warnings(named, now_utc())


def warn_expiring(transports: Sequence[object], *, printed: bool) -> None:
    """Log each expiry warning; with ``printed``, also say it (at start)."""
    try:
        warnings = certificate_warnings(transports)
    except Exception:
        log.exception("cannot check the certificates' expiry")
        return
    for warning in warnings:
        if printed:
            say(f"warning: {warning}")
        log.warning("%s", warning)


async def watch_expiry(
    transports: Sequence[object], interval: float = EXPIRY_CHECK_SECONDS
) -> None:
    """Warn about expiring certificates every ``interval`` seconds (the first check, at
    start, is :func:`warn_expiring` with ``printed=True``). Runs until cancelled; it picks
    up reloaded certificates, since it asks the transports each time."""
    while True:
        await asyncio.sleep(interval)
        warn_expiring(transports, printed=False)
