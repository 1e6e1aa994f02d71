"""What a transport is: the object a ``serve_transports`` hook returns to ``worker serve``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from worker_core.plugin import PluginError

if TYPE_CHECKING:
    from worker_core.plugin import Engine


@runtime_checkable
class Transport(Protocol):
    """A listener in front of the engine (gRPC, HTTPS, ...), run on serve's event loop.

    Both coroutines run on the one asyncio loop every transport shares, on the main thread:
    nothing they do may block it.
    """

    #: A short name for messages and the start-up summary (``"grpc"``).
    name: str

    async def start(self, engine: Engine) -> list[str]:
        """Begin serving ``engine``; return the addresses listened on (``"127.0.0.1:50051"``).

        Raise :class:`~worker_core.plugin.ConfigError` with one line naming the address
        for one that cannot be bound; serve prints it and exits 1.
        """
        ...

    async def stop(self, grace: float) -> None:
        """Stop accepting; give open calls ``grace`` seconds, then cancel them.

        Called once, after every job has ended, so followers have read the last output.
        """
        ...


def checked_transports(offered: list[Any]) -> list[Transport]:
    """The hook's answers, each checked to be a :class:`Transport`, names unique."""
    transports: list[Transport] = []
    for item in offered:
        if not isinstance(item, Transport) or not isinstance(getattr(item, "name", None), str):
            raise PluginError(
                f"a serve_transports hook returned {item!r}, which is not a transport "
                "(it needs a name, async start(engine) and async stop(grace))"
            )
        if any(t.name == item.name for t in transports):
            raise PluginError(f"two plugins offer a transport named {item.name!r}")
        transports.append(item)
    return transports
