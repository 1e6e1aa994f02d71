"""``worker serve --plugins metrics`` as a real process: a job over mTLS gRPC, then a scrape;
a metrics port already taken stops the server at startup with one line."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from grpc_certs import make_pki
from grpc_harness import RPC_TIMEOUT, serve_process, shell, spawn_serve
from metrics_helpers import (
    WAIT,
    free_port,
    jobs_by_state,
    refuses_connections,
    scrape_until,
    value,
)

from worker_plugins.grpc_transport import worker_pb2 as pb


def _config(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "server.toml"
    path.write_text(f'[plugins.metrics]\nlisten = "127.0.0.1:{port}"\n')
    return path


def test_a_server_counts_what_its_clients_did(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path / "etc", port)
    with serve_process(tmp_path / "srv", "--plugins", "metrics", "--config", str(config)) as srv:
        reply = srv.stub("alice").Submit(
            pb.SubmitRequest(spec=shell("echo hello; exit 2"), wait_seconds=20),
            timeout=RPC_TIMEOUT,
        )
        assert reply.job.exit_code == 2
        address = f"127.0.0.1:{port}"
        samples = scrape_until(
            address, lambda s: value(s, "worker_jobs_ended_total", reason="exited") == 1
        )
        assert value(samples, "worker_jobs_submitted_total") == 1
        assert value(samples, "worker_jobs_ended_total", reason="exited") == 1
        assert value(samples, "worker_output_bytes_total", stream="stdout") == len(b"hello\n")
        assert value(samples, "worker_spawn_duration_seconds_count") == 1
        assert all(count == 0 for count in jobs_by_state(samples).values())
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(WAIT) == 0
    assert refuses_connections(port)


def test_a_metrics_port_in_use_stops_the_server_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path / "etc", port)
        launched = spawn_serve(
            make_pki(tmp_path / "pki"), "--plugins", "metrics", "--config", str(config)
        )
        try:
            assert launched.process.wait(WAIT) == 1
        finally:
            launched.reap()
    # Nothing else was said: the engine never finished starting and no transport listened.
    assert launched.stderr.strip().splitlines() == [
        f"worker serve: error: metrics: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
