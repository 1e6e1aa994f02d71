"""``worker serve --plugins slurm``: the mTLS API, durable records and live output in front
of the real cluster, exercised the way a client does, over gRPC."""

from __future__ import annotations

import signal
from pathlib import Path

from grpc_harness import RPC_TIMEOUT, collect, serve_process, shell
from helpers import wait_until
from slurm_harness import SlurmCluster
from slurm_helpers import WAIT

from worker_plugins.grpc_transport import worker_pb2 as pb


def test_serve_runs_jobs_on_slurm_and_stops_them_when_it_stops(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f"""
[engine]
stop_grace = 2.0
max_running = 0

[plugins.slurm]
slurm_conf = "{slurm_cluster.conf}"
poll_interval = 0.25
output_interval = 0.05
"""
    )
    with serve_process(tmp_path / "pki", "--plugins", "slurm", "--config", str(config)) as serve:
        stub = serve.stub()
        submitted = stub.Submit(
            pb.SubmitRequest(spec=shell("echo one; sleep 0.3; echo two; echo oops >&2; exit 4")),
            timeout=RPC_TIMEOUT,
        ).job
        assert submitted.external_id.isdigit()
        output = collect(
            stub.Tail(pb.TailRequest(job_id=submitted.id), timeout=WAIT)  # until it ends
        )
        assert output == {pb.STREAM_STDOUT: b"one\ntwo\n", pb.STREAM_STDERR: b"oops\n"}
        job = stub.Get(pb.GetRequest(job_id=submitted.id), timeout=RPC_TIMEOUT).job
        assert job.state == pb.JOB_STATE_ENDED and job.exit_code == 4
        assert job.facts["slurm_state"] == "FAILED"
        # A job still running when the server stops is stopped with it.
        long = stub.Submit(
            pb.SubmitRequest(spec=shell("echo ready; exec sleep 300")), timeout=RPC_TIMEOUT
        ).job
        assert wait_until(
            lambda: slurm_cluster.squeue(long.external_id, "State") == "RUNNING", WAIT
        )
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(WAIT) == 0
    assert slurm_cluster.squeue(long.external_id, "State") in {"CANCELLED", "FAILED"}
