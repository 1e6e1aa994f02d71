"""A follower whose host vanishes (no FIN, no RST) is dropped by keepalive, long before its
call's deadline."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from grpc_harness import RPC_TIMEOUT, running_server, shell, wait_for
from reliability_harness import Relay

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc
from worker_plugins.grpc_transport.config import GrpcConfig


def test_vanished_follower_is_dropped(tmp_path: Path) -> None:
    config = GrpcConfig(keepalive_time=1.0, keepalive_timeout=1.0)
    with running_server(tmp_path, grpc_config=config) as h, Relay(h.port) as proxy:
        job_id = (
            h.stub()
            .Submit(pb.SubmitRequest(spec=shell("echo hi; sleep 600")), timeout=RPC_TIMEOUT)
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
            # The call's deadline (300 s) is far past the bound below: only keepalive (a PING
            # every second, unanswered after one more) can end the stream before it.
            tail = pb_grpc.WorkerStub(channel).Tail(pb.TailRequest(job_id=job_id), timeout=300)
            assert next(tail).data == b"hi\n"
            assert h.server.guard.open_streams("ghost") == 1
            proxy.freeze()
            started = time.monotonic()
            wait_for(lambda: h.server.guard.open_streams("ghost") == 0, timeout=60, what="drop")
            print(f"vanished follower dropped after {time.monotonic() - started:.2f}s")
            # The job is unaffected.
            assert h.engine.get(job_id).state.value == "running"
            tail.cancel()
        finally:
            channel.close()
            h.engine.stop(job_id, force=True, timeout=10)
