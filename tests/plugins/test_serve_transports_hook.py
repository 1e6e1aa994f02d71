"""``serve_transports``: a third party's transport, installed as a real distribution (an
entry point in a ``.dist-info`` on the path), is offered by the hook, started by
``worker serve`` on the engine it serves, and stopped on SIGTERM after every job ended."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import write_plugin_distribution

TRANSPORT = '''
import json
import os
from pathlib import Path

from worker_core.plugin import EngineClosed, JobSpec, hookimpl

LOG = Path(os.environ["FAKE_TRANSPORT_LOG"])


def note(**event):
    with LOG.open("a") as f:
        f.write(json.dumps(event) + "\\n")


class FakeTransport:
    """Listens nowhere; proves it was given a started engine by running a job on it."""

    name = "fake"

    async def start(self, engine):
        job = await engine.aio.submit(JobSpec("/bin/echo", ("through the transport",)))
        job = await engine.aio.wait(job.id, timeout=30)
        note(event="start", exit_code=job.exit_code, output=engine.output(job.id).decode())
        return ["fake:0"]

    async def stop(self, grace):
        note(event="stop", grace=grace)


class Plugin:
    @hookimpl
    def serve_transports(self, engine):
        try:
            engine.list()
            started = True
        except EngineClosed:  # offered before the engine starts, as the spec says
            started = False
        note(event="offered", started=started)
        return FakeTransport()
'''


def install_fake_transport(root: Path) -> None:
    """A distribution ``fake-transport`` with one ``worker.plugins`` entry point, found by
    ``importlib.metadata`` the way an installed one is."""
    write_plugin_distribution(
        root, "fake_transport", TRANSPORT, {"faketransport": "fake_transport:Plugin"}
    )


def events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_serve_runs_a_third_party_transport_from_the_hook_and_stops_it(tmp_path: Path) -> None:
    install_fake_transport(tmp_path)
    log = tmp_path / "transport.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "FAKE_TRANSPORT_LOG": str(log),
    }
    worker = Path(sys.executable).with_name("worker")
    command = [
        str(worker),
        "serve",
        "--plugins",
        "no:grpc,faketransport",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e["event"] == "start" for e in events(log)):
            assert process.poll() is None, process.communicate(timeout=10)
            time.sleep(0.05)
        assert [e["event"] for e in events(log)] == ["offered", "start"], "serve never started it"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    offered, started, stopped = events(log)
    assert offered["started"] is False, "the hook fires before the engine starts"
    assert started["exit_code"] == 0 and started["output"] == "through the transport\n"
    assert stopped["event"] == "stop" and stopped["grace"] > 0
    assert "listening on fake:0 (fake)" in stderr
