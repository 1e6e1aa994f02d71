"""The transport seam: a third party's transport, installed as a plugin, served by `worker serve`.

The plugin is a real distribution on ``PYTHONPATH`` (a module and its ``.dist-info`` with an
entry point), found exactly as any installed plugin is. Its transport is a plain asyncio TCP
server on the loop serve shares among transports: it answers how many jobs the engine holds,
and on stop says how many of the jobs it saw still run (none: jobs stop before transports).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from grpc_certs import make_pki
from grpc_harness import (
    RPC_TIMEOUT,
    Launched,
    ServeProcess,
    launch_serve,
    shell,
    spawn_serve,
    wait_for,
)
from helpers import write_plugin_distribution

from worker_plugins.grpc_transport import worker_pb2 as pb

EXIT_TIMEOUT = 60

PLUGIN = """
import asyncio
import sys
from pathlib import Path

from worker_core.plugin import hookimpl


def alive(pid):
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


class CountTransport:
    name = "count"

    def __init__(self):
        self._server = None
        self._engine = None
        self._pids = set()

    async def start(self, engine):
        self._engine = engine
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return ["127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]]

    async def _answer(self, reader, writer):
        await reader.readline()
        jobs = await self._engine.aio.list()
        self._pids.update(job.pid for job in jobs if job.pid)
        writer.write(b"%d jobs\\n" % len(jobs))
        await writer.drain()
        writer.close()

    async def stop(self, grace):
        # The engine is closed by now: what shows the order is whether the jobs still live.
        left = sum(alive(pid) for pid in self._pids)
        print("count: stop(grace=%s), %d of %d jobs alive" % (grace, left, len(self._pids)),
              file=sys.stderr)
        self._server.close()
        await self._server.wait_closed()


class CountPlugin:
    @hookimpl
    def serve_transports(self, engine):
        return CountTransport()


class NotATransportPlugin:
    @hookimpl
    def serve_transports(self):
        return "not a transport"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the ``worker-test-count`` distribution, for ``PYTHONPATH``."""
    site = tmp_path_factory.mktemp("site")
    write_plugin_distribution(
        site,
        "worker_test_count",
        PLUGIN,
        {
            "count": "worker_test_count:CountPlugin",
            "notatransport": "worker_test_count:NotATransportPlugin",
        },
    )
    return site


def _count_address(launched: Launched) -> tuple[str, int]:
    found = re.compile(r"listening on .*?127\.0\.0\.1:(\d+) \(count\)")
    wait_for(
        lambda: found.search(launched.stderr) or launched.process.poll() is not None,
        timeout=30,
        what="the count transport to listen",
    )
    match = found.search(launched.stderr)
    assert match, launched.stderr
    return "127.0.0.1", int(match.group(1))


def _ask(address: tuple[str, int]) -> str:
    with socket.create_connection(address, timeout=RPC_TIMEOUT) as conn:
        conn.sendall(b"count\n")
        return conn.makefile().readline().strip()


def test_a_third_party_transport_is_served_beside_grpc_and_stopped_after_the_jobs(
    tmp_path: Path, site: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    launched = launch_serve(pki, "--plugins", "count", env={"PYTHONPATH": str(site)})
    try:
        address = _count_address(launched)
        assert _ask(address) == "0 jobs"
        # Both transports serve the one engine: a job submitted over gRPC is counted.
        stub = ServeProcess(launched.process, launched.port, pki, launched.stderr_lines).stub()
        stub.Submit(pb.SubmitRequest(spec=shell("sleep 300")), timeout=RPC_TIMEOUT)
        assert _ask(address) == "1 jobs"
        launched.process.terminate()
        assert launched.process.wait(EXIT_TIMEOUT) == 0
    finally:
        launched.reap()
    assert "(grpc)" in launched.stderr and "(count)" in launched.stderr
    # Stopped once, with serve's grace, after every job had ended.
    assert launched.stderr.count("count: stop(") == 1
    assert "count: stop(grace=2.0), 0 of 1 jobs alive" in launched.stderr
    assert "Traceback" not in launched.stderr


def test_a_hook_returning_something_else_is_one_line_naming_it(tmp_path: Path, site: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    launched = spawn_serve(pki, "--plugins", "notatransport", env={"PYTHONPATH": str(site)})
    try:
        assert launched.process.wait(EXIT_TIMEOUT) == 1
    finally:
        launched.reap()
    assert launched.stderr.splitlines() == [
        "worker serve: error: a serve_transports hook returned 'not a transport', which is "
        "not a transport (it needs a name, async start(engine) and async stop(grace))"
    ]
