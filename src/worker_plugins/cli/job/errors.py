"""Client errors: what the commands print as one line, and the exit code for each kind.

Every failure the client can meet ends as a :class:`ClientError`, which the commands print as
one line on stderr (``worker job: error: ...``) before exiting with its code. Exit codes
follow sysexits(3) loosely, so a script can tell "the server said no" from "there was no
server" from "my own setup is wrong" (:mod:`.rpc_errors` maps each gRPC status to one):

====  ==========================================================================
1     the server refused or failed the request (not found, denied, invalid...)
69    the server cannot be reached, or the TLS handshake failed
75    the server did not answer in time
78    the client's own configuration: missing or unreadable certificate files,
      a bad client config file, no certificate configured
====  ==========================================================================
"""

from __future__ import annotations

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 69
EXIT_TIMEOUT = 75
EXIT_CONFIG = 78


class ClientError(Exception):
    """A failure to report to the user as one line, and the process exit code for it."""

    def __init__(
        self,
        message: str,
        exit_code: int = EXIT_REFUSED,
        status: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        #: The gRPC status the server answered (``"NOT_FOUND"``), if it answered.
        self.status = status
        #: The spec field an INVALID_ARGUMENT answer names (its ``worker-field`` metadata).
        self.field = field
