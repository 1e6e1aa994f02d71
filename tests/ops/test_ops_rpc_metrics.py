"""``worker serve --plugins metrics,runas``: its start-up summary names the metrics address
and the identity jobs run as, every RPC is counted by method and status code, and every
metric docs/DEPLOYMENT.md names is in the scrape."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_harness import RPC_TIMEOUT, serve_process, shell

from worker_plugins.grpc_transport import worker_pb2 as pb

parser = pytest.importorskip("prometheus_client.parser")

EXIT_TIMEOUT = 30.0

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "DEPLOYMENT.md"

#: ``{(sample name, labels): value}`` of one scrape.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

#: ``metrics: http://127.0.0.1:PORT/metrics`` in the start-up summary.
METRICS_URL = re.compile(r"; metrics: (http://127\.0\.0\.1:\d+/metrics);")


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_until(url: str, done: Callable[[Samples], bool], timeout: float = 30.0) -> Samples:
    """Scrape until ``done`` holds (the server counts a cancelled stream once its task has
    unwound, just after the client let go); the last scrape if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def rpc_count(samples: Samples, method: str, code: str) -> float:
    labels = frozenset({("method", method), ("code", code)})
    return samples.get(("worker_rpc_duration_seconds_count", labels), 0.0)


def test_the_summary_names_metrics_and_identity_and_each_rpc_is_counted(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[plugins.metrics]\nlisten = "127.0.0.1:0"\n')
    plugins = ("--plugins", "metrics,runas", "--config", str(config))
    with serve_process(tmp_path / "pki", *plugins) as srv:
        [summary] = [line for line in srv.stderr_lines if "listening on" in line]
        assert "; jobs run as: nobody (uid 65534, gid 65534), root refused; " in summary
        match = METRICS_URL.search(summary)
        assert match, summary
        url = match.group(1)

        alice = srv.stub("alice")
        # As nobody: /bin/sh is everyone's to run.
        job = alice.Submit(
            pb.SubmitRequest(spec=shell("id -u"), wait_seconds=20), timeout=RPC_TIMEOUT
        ).job
        assert job.exit_code == 0
        output = b"".join(c.data for c in alice.Tail(pb.TailRequest(job_id=job.id), timeout=20))
        assert output == b"65534\n"
        with pytest.raises(grpc.RpcError):
            alice.Get(pb.GetRequest(job_id="0" * 32), timeout=RPC_TIMEOUT)

        # A follower that gives up: its stream's end is counted as CANCELLED.
        running = alice.Submit(
            pb.SubmitRequest(spec=shell("echo one; sleep 60")), timeout=RPC_TIMEOUT
        ).job
        follow = alice.Tail(pb.TailRequest(job_id=running.id), timeout=60)
        assert next(follow).data == b"one\n"
        follow.cancel()
        samples = scrape_until(url, lambda s: rpc_count(s, "Tail", "CANCELLED") >= 1)
        assert rpc_count(samples, "Tail", "CANCELLED") == 1
        alice.Stop(pb.StopRequest(job_id=running.id, grace_seconds=0), timeout=RPC_TIMEOUT)

        samples = scrape(url)
        assert rpc_count(samples, "Submit", "OK") == 2
        assert rpc_count(samples, "Tail", "OK") == 1
        assert rpc_count(samples, "Get", "NOT_FOUND") == 1
        assert rpc_count(samples, "Get", "OK") == 0
        section = GUIDE.read_text().split("### Metrics", 1)[1].split("\n### ", 1)[0]
        named = set(re.findall(r"\b((?:worker|process)_[a-z_]+[a-z])\b", section))
        assert {"worker_rpc_duration_seconds_count", "worker_queue_depth"} <= named
        present = {name for name, _ in samples}
        histograms = {name.removesuffix("_bucket") for name in present}
        assert sorted(named - present - histograms) == []
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(EXIT_TIMEOUT) == 0
