"""`worker serve` as a systemd service: the notify protocol, and the example unit file.

The service manager's end of ``$NOTIFY_SOCKET`` is a real ``AF_UNIX`` datagram socket bound
by the test (a path, and an abstract ``@name``), read while a real `worker serve` runs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_certs import make_pki
from grpc_harness import RPC_TIMEOUT, ServeProcess, launch_serve

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.serve.notify import notify

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples" / "systemd" / "worker.service"

#: Bound on waiting for one notification and on the server's exit.
TIMEOUT = 30.0


def _receive(sock: socket.socket) -> dict[str, str]:
    """One notification: its ``KEY=VALUE`` lines."""
    sock.settimeout(TIMEOUT)
    data = sock.recv(65536).decode()
    assert data.endswith("\n"), data
    return dict(line.split("=", 1) for line in data.splitlines())


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """The service manager's socket and the ``$NOTIFY_SOCKET`` value naming it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if request.param == "path":
            path = tmp_path / "notify.sock"
            sock.bind(str(path))
            yield sock, str(path)
        else:
            name = f"worker-test-notify-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield sock, "@" + name


def test_ready_once_it_listens_and_stopping_at_shutdown(
    tmp_path: Path, manager: tuple[socket.socket, str]
) -> None:
    sock, address = manager
    pki = make_pki(tmp_path / "pki")
    launched = launch_serve(pki, env={"NOTIFY_SOCKET": address})
    try:
        ready = _receive(sock)
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith(f"listening on 127.0.0.1:{launched.port} (grpc)")
        # READY means clients can be served.
        server = ServeProcess(launched.process, launched.port, pki, launched.stderr_lines)
        server.stub().List(pb.ListRequest(), timeout=RPC_TIMEOUT)
        launched.process.terminate()
        assert _receive(sock) == {"STOPPING": "1", "STATUS": "stopping every job"}
        assert launched.process.wait(TIMEOUT) == 0
    finally:
        launched.reap()
    assert "Traceback" not in launched.stderr


def test_without_a_manager_nothing_is_sent_and_a_bad_address_is_only_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify(READY="1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert notify(READY="1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify(READY="1") is False
    messages = [r.getMessage() for r in caplog.records if r.name == "worker.serve"]
    assert any("cannot notify the service manager" in m for m in messages)
    assert any("is not a socket path or @name" in m for m in messages)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)
def test_the_example_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for directive in (
        "Type=notify",
        "Delegate=yes",
        "KillMode=mixed",
        "StateDirectory=worker",
        "Restart=on-failure",
        "--config /etc/worker/server.toml",
    ):
        assert f"\n{directive}" in text or f" {directive}" in text, directive
    # verify checks that ExecStart's program exists: point it at the installed `worker`.
    installed = Path(sys.executable).with_name("worker")
    assert installed.exists()
    unit = tmp_path / "worker.service"
    unit.write_text(text.replace("/usr/local/bin/worker", str(installed)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # A directive it cannot parse is only a warning (exit 0): the output must be empty too.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_units_stop_timeout_outlasts_the_default_grace() -> None:
    from worker_core.plugin import EngineSettings
    from worker_plugins.serve.running import TRANSPORT_STOP_GRACE

    settings = EngineSettings()
    needed = (
        settings.stop_grace + settings.kill_timeout + settings.output_linger + TRANSPORT_STOP_GRACE
    )
    [line] = [x for x in UNIT.read_text().splitlines() if x.startswith("TimeoutStopSec=")]
    assert float(line.split("=")[1]) > needed
