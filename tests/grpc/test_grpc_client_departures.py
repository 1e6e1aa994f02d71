"""A client going away is routine: no ERROR and no traceback in the server's log.

grpc.aio logs ``ExecuteBatchError raised in core by servicer method`` at ERROR when it fails
to send on a call whose client has just left, and whether it notices the departure first is
a race; so the test makes many departures of both kinds: followers cancelling a Tail while
output streams, and List answers larger than the client accepts (the client resets the
stream). The server is a real `worker serve` process, at its default log level.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, serve_process, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

#: A client's default receive limit; every List below answers more than that.
CLIENT_RECEIVE_LIMIT = 4 << 20


def test_cancelled_tails_and_oversize_lists_leave_no_error_in_the_log(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        stub = serve.stub()
        job = stub.Submit(
            pb.SubmitRequest(spec=shell("yes | head -c 20000000")), timeout=RPC_TIMEOUT
        ).job
        for _ in range(20):
            tail = stub.Tail(pb.TailRequest(job_id=job.id), timeout=RPC_TIMEOUT)
            assert next(tail).data
            tail.cancel()
        # Records over the client's limit: a spec holds up to 1 MiB of arguments.
        padding = "x" * (900 << 10)
        for _ in range(CLIENT_RECEIVE_LIMIT // len(padding) + 1):
            spec = pb.JobSpec(command="/bin/sleep", args=["300", padding])
            stub.Submit(pb.SubmitRequest(spec=spec), timeout=RPC_TIMEOUT)
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as refused:
                stub.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Still serving, for the same client.
        assert stub.Get(pb.GetRequest(job_id=job.id), timeout=RPC_TIMEOUT).job.id == job.id
        serve.process.terminate()
        assert serve.process.wait(timeout=60) == 0
    assert not re.search(r"\bERROR\b|Traceback", serve.stderr), serve.stderr
