"""A follower whose host vanishes (no FIN, no RST) is dropped by keepalive within seconds."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_harness import RPC_TIMEOUT, running_server, shell, wait_for

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc
from worker_plugins.grpc_transport.config import GrpcConfig


class BlackHoleProxy:
    """A TCP relay to ``port`` that, once frozen, stops moving bytes but keeps sockets open,
    like a peer whose machine lost power."""

    def __init__(self, port: int) -> None:
        self._upstream_port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.frozen = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._closed.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):
                dst.sendall(data)

    def close(self) -> None:
        self._closed.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[BlackHoleProxy]:
    proxy = BlackHoleProxy(port)
    try:
        yield proxy
    finally:
        proxy.close()


def test_vanished_follower_is_dropped(tmp_path: Path) -> None:
    config = GrpcConfig(keepalive_time=1.0, keepalive_timeout=1.0)
    with running_server(tmp_path, grpc_config=config) as h, proxy_to(h.port) as proxy:
        job_id = (
            h.stub()
            .Submit(pb.SubmitRequest(spec=shell("echo hi; sleep 60")), timeout=RPC_TIMEOUT)
            .job.id
        )
        identity = h.pki.client("ghost")
        creds = grpc.ssl_channel_credentials(h.pki.ca.cert_pem, identity.key, identity.cert)
        channel = grpc.secure_channel(
            f"127.0.0.1:{proxy.port}",
            creds,
            options=[("grpc.ssl_target_name_override", "localhost")],
        )
        try:
            tail = pb_grpc.WorkerStub(channel).Tail(pb.TailRequest(job_id=job_id), timeout=60)
            assert next(tail).data == b"hi\n"
            assert h.server.guard.open_streams("ghost") == 1
            proxy.frozen.set()
            started = time.monotonic()
            wait_for(lambda: h.server.guard.open_streams("ghost") == 0, timeout=15, what="drop")
            noticed = time.monotonic() - started
            print(f"vanished follower dropped after {noticed:.2f}s")
            assert noticed < 10
            # The job is unaffected.
            assert h.engine.get(job_id).state.value == "running"
            tail.cancel()
        finally:
            channel.close()
            h.engine.stop(job_id, force=True, timeout=10)
