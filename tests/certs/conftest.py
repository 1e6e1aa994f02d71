"""Fixtures of the certificate tests: a CA in memory, a PKI written by the store, and a set
made by ``worker certs init``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from worker_plugins.certs import authority, store
from worker_plugins.certs.authority import Issued
from worker_plugins.certs.commands import certs_group


@pytest.fixture(scope="module")
def ca() -> Issued:
    return authority.make_ca("test CA", days=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server, ``alice`` and ``mallory`` (from another CA), as the store writes them."""
    directory = tmp_path_factory.mktemp("pki")
    ca = authority.make_ca("tls test CA", days=30)
    store.write_identity(directory, "ca", ca, overwrite=False)
    store.write_identity(directory, "server", authority.issue_server(ca), overwrite=False)
    store.write_identity(directory, "alice", authority.issue_client(ca, "alice"), overwrite=False)
    other = authority.make_ca("other CA", days=30)
    store.write_identity(
        directory, "mallory", authority.issue_client(other, "mallory"), overwrite=False
    )
    return directory


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A directory made by ``worker certs init --client alice --client bob``."""
    directory = tmp_path / "certs"
    args = ["init", "--dir", str(directory), "--client", "alice", "--client", "bob"]
    result = CliRunner().invoke(certs_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return directory
