"""The running server: every transport on one asyncio event loop until SIGTERM or SIGINT;
SIGHUP reloads certificates and policy (see :mod:`.reload`).

One loop on the main thread, shared by every transport (``grpc.aio`` today; an aiohttp
server can join it), so a transport is a coroutine or two, not a thread of its own. The
engine's blocking calls (stopping every job) run on a worker thread while the loop goes on
serving: followers read a stopped job's last output before their transport closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker_core.plugin import WorkerError, release_if_free_above

from .notify import notify
from .reload import Reloader, reloadables, warn_expiring, watch_expiry
from .report import report_started, say
from .stops import STOP_SIGNALS, StopRequests

if TYPE_CHECKING:
    from worker_core.plugin import Engine

    from .transport import Transport

log = logging.getLogger("worker.serve")

#: Seconds each transport gives open calls to finish once every job has ended.
TRANSPORT_STOP_GRACE = 2.0

#: Bound on one transport's start (binding a port, loading its files) and, beyond its grace,
#: on its stop.
TRANSPORT_TIMEOUT = 30.0

#: How often the server looks at the memory its allocator holds free, and how much it keeps:
#: past that, the free part goes back to the kernel (see tune_allocator_for_streaming).
HOUSEKEEPING_SECONDS = 10.0
FREE_MEMORY_KEPT = 256 << 20


def serve(
    engine: Engine,
    transports: Sequence[Transport],
    grace: float | None,
    stops: StopRequests,
) -> None:
    """Start every transport on ``engine`` (started), serve until SIGTERM or SIGINT, then stop
    every job (SIGTERM, ``grace``, SIGKILL) and after that every transport. Meanwhile SIGHUP
    reloads what can be reloaded (:mod:`.reload`) and expiring certificates are warned about.

    Raises :class:`WorkerError` if a transport cannot start; whatever had started is
    stopped and every job ended first (there are none yet). A stop signal ``stops`` noted
    before the loop took the signals over cuts the start-up short (KeyboardInterrupt or
    :class:`~.stops.Terminated`).
    """
    asyncio.run(_serve(engine, transports, grace, stops))


async def _serve(
    engine: Engine, transports: Sequence[Transport], grace: float | None, stops: StopRequests
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    stops.check()  # one that came before the loop had them: the start-up is cut short
    reloader = Reloader()
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    started: list[Transport] = []
    background: list[asyncio.Task[None]] = []
    try:
        addresses: list[tuple[str, str]] = []
        for transport in transports:
            bound = await _start(transport, engine)
            started.append(transport)
            addresses.extend((transport.name, address) for address in bound)
        reloader.arm(reloadables(engine, started))
        line = report_started(engine, addresses)
        warn_expiring(started, printed=True)
        notify(READY="1", STATUS=line)
        background.append(asyncio.create_task(_housekeeping()))
        background.append(asyncio.create_task(watch_expiry(started)))
        await stopping.wait()
        notify(STOPPING="1", STATUS="stopping every job")
        say("stopping every job...")
    finally:
        for task in background:
            task.cancel()
        # A SIGHUP from here on would find the transports stopping: it is ignored.
        await reloader.close()
        # Jobs first, with the transports still up: followers get the final output and their
        # streams end normally. Then each transport cancels whatever is still open.
        await asyncio.to_thread(engine.close, grace)
        await asyncio.gather(*(_stop(t) for t in started))
    say("stopped")


async def _start(transport: Transport, engine: Engine) -> list[str]:
    try:
        return list(await asyncio.wait_for(transport.start(engine), TRANSPORT_TIMEOUT))
    except TimeoutError:
        raise WorkerError(
            f"the {transport.name} transport did not start within {TRANSPORT_TIMEOUT:g} s"
        ) from None


async def _stop(transport: Transport) -> None:
    try:
        await asyncio.wait_for(
            transport.stop(TRANSPORT_STOP_GRACE), TRANSPORT_STOP_GRACE + TRANSPORT_TIMEOUT
        )
    except Exception:
        # The others must still stop, and the process is about to exit anyway.
        log.exception("the %s transport did not stop cleanly", transport.name)


async def _housekeeping() -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            await asyncio.to_thread(release_if_free_above, FREE_MEMORY_KEPT)
        except Exception:
            log.exception("housekeeping failed; it stops, the server goes on")
            return
