"""Telling a service manager how the server is doing: systemd's ``sd_notify`` protocol.

With ``Type=notify``, systemd passes an ``AF_UNIX`` datagram socket in ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the abstract namespace) and waits for ``READY=1`` before it counts
the service as started; ``STOPPING=1`` says shutdown has begun. Each message is one datagram
of ``KEY=VALUE`` lines. Without the variable, nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("worker.serve")

#: Bound on one send: systemd reads at once, but the server must not hang on a full queue.
SEND_TIMEOUT = 2.0


def notify(**fields: str) -> bool:
    """Send ``fields`` (``READY="1"``, ``STATUS="..."``) to ``$NOTIFY_SOCKET``; True if sent.

    A failure is logged, never raised: the server runs the same with or without a manager.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        log.warning("NOTIFY_SOCKET=%r is not a socket path or @name; not notifying", address)
        return False
    message = "".join(f"{key}={value}\n" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(message, target)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", address, exc)
        return False
    return True
