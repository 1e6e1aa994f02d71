"""Running ``worker job`` against a real in-process mTLS server (see ``grpc_harness``).

A plain module, not a conftest: each test module starts the server it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from click.testing import CliRunner, Result
from grpc_certs import Identity
from grpc_harness import Harness

from worker_plugins.cli.job.commands import job_group

#: Variables a developer's shell may set that would change what the tests connect to.
_CLEARED = ("WORKER_SERVER", "WORKER_CA", "WORKER_CERT", "WORKER_KEY", "WORKER_CLIENT_CONFIG")


def client_env(
    harness: Harness, cn: str = "alice", identity: Identity | None = None
) -> dict[str, str]:
    """Environment for a client with certificate ``cn`` (written next to the server's)."""
    directory = harness.pki.directory
    cert, key = (identity or harness.pki.client(cn)).write(directory, f"client-{cn}")
    return {
        "WORKER_SERVER": harness.target,
        "WORKER_CA": str(harness.pki.ca_path),
        "WORKER_CERT": str(cert),
        "WORKER_KEY": str(key),
        # No stray ~/.config/worker/client.toml of the machine running the tests.
        "XDG_CONFIG_HOME": str(directory / "no-config"),
    }


def run(args: Sequence[str], env: Mapping[str, str | None]) -> Result:
    """``worker job ARGS`` in this process; stdout and stderr are captured separately."""
    full_env: dict[str, str | None] = dict.fromkeys(_CLEARED)
    full_env.update(env)
    return CliRunner().invoke(job_group, list(args), env=full_env, catch_exceptions=True)


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with exactly one ``worker job: error:`` line and no traceback."""
    assert result.exit_code not in (0, None), result.output
    # A traceback would surface as an exception other than SystemExit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("worker job: error: "), lines
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_client_config(path: Path, **keys: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f'{key} = "{value}"\n' for key, value in keys.items()))
    return path
