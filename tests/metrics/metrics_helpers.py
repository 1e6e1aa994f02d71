"""Scraping ``/metrics`` as Prometheus does, for the metrics tests: a real HTTP GET, parsed
with prometheus_client's own text parser."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

#: Every bounded wait of these tests: generous for a loaded 2-core machine.
WAIT = 30.0

#: ``{(sample name, labels): value}`` of one scrape.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    """GET ``http://address/metrics`` and parse it."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; KeyError if the scrape has no such series."""
    return samples[(name, frozenset(labels.items()))]


def jobs_by_state(samples: Samples) -> dict[str, float]:
    """``worker_jobs`` as ``{state: count}``."""
    return {
        dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "worker_jobs"
    }


def scrape_until(address: str, done: Callable[[Samples], bool], timeout: float = WAIT) -> Samples:
    """Scrape until ``done`` holds: ENDED reaches observers on an engine thread, possibly
    just after ``wait`` returned. The last scrape if it never does (the assert shows it)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(address)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def free_port() -> int:
    """A loopback port free now (the kernel's pick; another process could take it later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refuses_connections(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True
