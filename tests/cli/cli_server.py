"""A real ``worker serve`` for the command-line tests, and the real ``worker`` as its client.

The server is a process started by the serve launcher of ``grpc_harness`` on a free loopback
port, with the committed development certificates (``certs/``), the example policy
(``examples/policy.toml``, through ``rbac``), durable state in a temporary directory, and
optionally the ``cgroups`` plugin under a parent of its own. Each client command is a
separate ``worker`` process, so what a test sees is what a user's shell would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
from cgroup_helpers import force_remove_parent, unique_parent
from grpc_certs import make_pki
from grpc_harness import LISTENING, Launched, spawn_serve, wait_for

ROOT = Path(__file__).resolve().parents[2]
CERTS = ROOT / "certs"
POLICY = ROOT / "examples" / "policy.toml"
WORKER = str(Path(sys.executable).with_name("worker"))
#: Bound on every command a test runs, and on the server's start and stop.
TIMEOUT = 60.0


@attrs.frozen
class RealServer:
    launched: Launched
    port: int
    home: Path  # XDG_CONFIG_HOME of the clients: no stray client.toml is read

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, cn: str = "alice", **extra: str) -> dict[str, str]:
        """The environment of a ``worker job`` client with the committed certificate of ``cn``."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "GRPC_"))}
        environ.update(
            WORKER_SERVER=self.target,
            WORKER_CA=str(CERTS / "ca.pem"),
            WORKER_CERT=str(CERTS / f"{cn}.pem"),
            WORKER_KEY=str(CERTS / f"{cn}.key"),
            XDG_CONFIG_HOME=str(self.home),
        )
        environ.update(extra)
        return environ

    def job(
        self, *args: str, cn: str = "alice", env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``worker job ARGS`` as ``cn``, to the end (bounded)."""
        return subprocess.run(
            [WORKER, "job", *args],
            env=dict(env) if env is not None else self.env(cn),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def ok(self, *args: str, cn: str = "alice") -> str:
        """``worker job ARGS``, which must succeed; its stdout."""
        done = self.job(*args, cn=cn)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done.stdout

    def submit(self, *args: str, cn: str = "alice") -> str:
        """``worker job submit ARGS``; the new job's id."""
        return self.ok("submit", *args, cn=cn).strip()


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The command failed with ``code`` and one ``worker job: error:`` line (or, for a usage
    error, click's ``Error:`` line), naming every fragment; no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(("worker job: error: ", "Error: "))]
    assert len(errors) == 1, lines
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@contextlib.contextmanager
def real_server(directory: Path, *, cgroups: bool = False) -> Iterator[RealServer]:
    """``worker serve`` with ``rbac`` (and ``cgroups``), stopped by SIGTERM at the end."""
    parent = unique_parent() if cgroups else None
    config = directory / "server.toml"
    sections = [f'[plugins.rbac]\npolicy = "{POLICY}"\n']
    if parent is not None:
        sections.append(f'[plugins.cgroups]\nparent = "{parent}"\n')
    config.write_text("\n".join(sections))
    plugins = "rbac,cgroups" if cgroups else "rbac"
    # The launcher wants a PKI for the paths it defaults; the committed certificates are used.
    pki = make_pki(directory / "unused-pki")
    launched = spawn_serve(
        pki,
        "--listen", "127.0.0.1:0",
        "--ca", str(CERTS / "ca.pem"),
        "--cert", str(CERTS / "server.pem"),
        "--key", str(CERTS / "server.key"),
        "--state-dir", str(directory / "state"),
        "--plugins", plugins,
        "--config", str(config),
        "--grace", "1",
        grpc_flags=False,
    )  # fmt: skip
    try:
        lines, process = launched.stderr_lines, launched.process
        wait_for(
            lambda: any(LISTENING.search(x) for x in lines) or process.poll() is not None,
            timeout=TIMEOUT,
            what="worker serve to listen",
        )
        match = next((m for x in list(lines) if (m := LISTENING.search(x))), None)
        assert match, f"worker serve did not start: {''.join(lines)}"
        home = directory / "home"
        home.mkdir()
        yield RealServer(launched, int(match.group(1)), home)
        launched.process.terminate()
        assert launched.process.wait(TIMEOUT) == 0, launched.stderr
    finally:
        launched.reap()
        if parent is not None:
            force_remove_parent(parent)
