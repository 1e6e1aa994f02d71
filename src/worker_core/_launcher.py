"""The engine's side of the launcher: start it, send it spawn plans, hear about exits.

The launcher itself (:mod:`worker_core._launcher_main`) is a fresh single-threaded
interpreter; this module talks to it over a SOCK_SEQPACKET socket from a threaded engine.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import attrs

from ._errors import FailedPrecondition
from ._launcher_main import recv_with_fds

log = logging.getLogger("worker.launcher")

_MAIN = Path(__file__).with_name("_launcher_main.py")
_MAX_REPLY = 1 << 16
_SOCKET_BUFFER = 4 << 20


@attrs.frozen
class ExitReport:
    job_id: str
    pid: int
    status: int  # raw wait status
    cpu_seconds: float
    max_rss_bytes: int

    @property
    def exit_code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None


class SpawnFailed(Exception):
    """The child could not be set up or exec'd; ``stage`` says where (``exec``, ``cwd``, ``cgroup``...)."""

    def __init__(self, stage: str, err: int, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage, self.errno, self.message = stage, err, message


class LauncherDied(FailedPrecondition):
    """The launcher is not running; running jobs were lost with it."""


class LauncherClient:
    """A running launcher process. ``on_exit`` and ``on_death`` are called on its reader thread;
    ``on_death`` gets this client and the reason."""

    def __init__(
        self,
        on_exit: Callable[[ExitReport], None],
        on_death: Callable[[LauncherClient, str], None],
        timeout: float,
        restricted: bool = False,
    ) -> None:
        self._on_exit = on_exit
        self._on_death = on_death
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closing = False
        self._dead = False
        self._ready: Future[dict[str, Any]] = Future()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        self._sock = ours
        try:
            # A fresh interpreter, not a fork of this (possibly threaded) process; -I -S keeps
            # it from reading the environment or site-packages: it needs only the stdlib.
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(_MAIN),
                    str(theirs.fileno()),
                    *(["restricted"] if restricted else []),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C at the engine's terminal is the engine's to handle
                env={"PATH": os.defpath},
            )
        finally:
            theirs.close()
        self._reader = threading.Thread(
            target=self._read_loop, name="worker-launcher-reader", daemon=True
        )
        self._reader.start()
        try:
            self._ready.result(timeout)
        except FutureTimeout as exc:
            self.kill()
            raise LauncherDied(f"the launcher did not start within {timeout:g}s") from exc
        except LauncherDied:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return not self._dead

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered (spawns whose child is still setting up)."""
        return len(self._pending)

    def spawn(
        self, job_id: str, plan: dict[str, Any], stdout_w: int, stderr_w: int
    ) -> tuple[int, int]:
        """Start a job; return its PID and a pidfd for it (the caller closes it).

        Raises :class:`SpawnFailed` or :class:`LauncherDied`.
        """
        reply = self._request({"op": "spawn", "job": job_id, "plan": plan}, [stdout_w, stderr_w])
        if reply["op"] == "spawn_failed":
            raise SpawnFailed(reply["stage"], reply["errno"], reply["error"])
        pid: int = reply["pid"]
        pidfd: int = reply["fds"][0]
        if reply.get("placement"):
            log.debug("job %s: placed in its cgroup by %s", job_id, reply["placement"])
        return pid, pidfd

    def signal(self, pid: int, signum: int) -> bool:
        """Signal the job whose main process is ``pid`` (its group and descendants).

        False if the launcher has already reaped it: a reaped PID is never signalled.
        """
        try:
            reply = self._request({"op": "signal", "pid": pid, "signum": signum}, [])
        except LauncherDied:
            return False
        return bool(reply["delivered"])

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the launcher to kill any job left and exit; kill it if it does not."""
        self._closing = True
        if not self._dead:
            with contextlib.suppress(OSError), self._send_lock:
                self._sock.send(json.dumps({"op": "shutdown"}).encode())
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("launcher %d did not exit in %.1fs; killing it", self._process.pid, timeout)
            self.kill()
        self._reader.join(timeout)
        self._sock.close()

    def kill(self) -> None:
        self._closing = True
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5.0)

    def _request(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if self._dead:
            raise LauncherDied("the launcher is not running")
        request_id = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._pending[request_id] = future
        data = json.dumps({**message, "id": request_id}).encode()
        try:
            with self._send_lock:
                socket.send_fds(self._sock, [data], fds)
        except OSError as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            raise LauncherDied(f"cannot reach the launcher: {exc}") from exc
        try:
            return future.result(self._timeout + 5.0)
        except FutureTimeout as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            raise LauncherDied(
                f"the launcher did not answer within {self._timeout + 5.0:g}s"
            ) from exc

    def _read_loop(self) -> None:
        reason = "the launcher closed its socket"
        try:
            while True:
                data, fds = recv_with_fds(self._sock, _MAX_REPLY, 1)
                if not data:
                    break
                message = json.loads(data)
                if fds:
                    message["fds"] = fds
                op = message["op"]
                if op == "ready":
                    self._ready.set_result(message)
                elif op == "exit":
                    self._on_exit(
                        ExitReport(
                            job_id=message["job"],
                            pid=message["pid"],
                            status=message["status"],
                            cpu_seconds=message["cpu_seconds"],
                            max_rss_bytes=message["max_rss_bytes"],
                        )
                    )
                elif op == "bye":
                    break
                else:
                    with self._lock:
                        future = self._pending.pop(message.get("id", -1), None)
                    if future is not None:
                        future.set_result(message)
        except OSError as exc:
            reason = f"lost the launcher socket: {exc}"
        except Exception:
            log.exception("launcher reader failed")
            reason = "the launcher reader failed"
        self._dead = True
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(LauncherDied("the launcher died"))
        if not self._ready.done():
            self._ready.set_exception(LauncherDied(f"the launcher failed to start: {reason}"))
        if not self._closing:
            code = self._process.poll()
            self._on_death(
                self,
                f"the launcher process died (exit status {code})" if code is not None else reason,
            )
