"""gRPC's own Python log, made to tell routine from trouble.

grpc.aio logs ``ExecuteBatchError raised in core by servicer method [...]`` at ERROR, with a
traceback, whenever the core fails to send on a call whose client has just gone: a follower
that cancels its Tail, a client that closes the connection, a List answer larger than the
client accepts (the client resets the stream). gRPC skips the log when it has already seen
the cancellation, so which departures are logged is a race. A client going away is routine
for a server: such records become one debug line on ``worker.grpc``.
"""

from __future__ import annotations

import logging

#: The logger grpc.aio's server code writes to (its Cython module's ``__name__``).
GRPC_AIO_LOGGER = "grpc._cython.cygrpc"

_DEPARTURE = "ExecuteBatchError raised in core by servicer method"

log = logging.getLogger("worker.grpc")


class _ClientDepartures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_DEPARTURE):
            return True
        method = message.removeprefix(_DEPARTURE).strip(" []")
        log.debug("the client of %s went away before its answer was sent", method)
        return False


_FILTER = _ClientDepartures()


def quiet_client_departures() -> None:
    """Turn gRPC's error records for a departed client into debug lines (idempotent)."""
    logging.getLogger(GRPC_AIO_LOGGER).addFilter(_FILTER)
