"""Running a program as a person at a terminal sees it: stderr on a pseudo-terminal.

What a command says only to a person (progress lines, "waiting up to 5s...") is written only
when stderr is a terminal; these tests give it one, and read stdout from a pipe as a script
would.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Bound on the whole run.
TIMEOUT = 120.0


def run_with_stderr_on_a_terminal(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, str, str]:
    """Run ``argv`` with stderr on a pseudo-terminal and stdout piped: its status, stdout and
    what it wrote on the terminal (with the terminal's ``\\r\\n`` line ends as ``\\n``)."""
    main, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        assert process.stdout is not None
        out = process.stdout.fileno()
        streams = {main: bytearray(), out: bytearray()}
        deadline = time.monotonic() + timeout
        open_fds = set(streams)
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 0.5)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the terminal's other end closed: the process is gone
                    data = b""
                if data:
                    streams[fd] += data
                else:
                    open_fds.discard(fd)
            if not ready and process.poll() is not None and main in open_fds:
                open_fds.discard(main)  # nothing more will come on a terminal nobody holds
        try:
            status = process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise
        finally:
            process.stdout.close()
    finally:
        os.close(main)
    said = streams[main].decode(errors="replace").replace("\r\n", "\n")
    return status, streams[out].decode(errors="replace"), said
