"""Fixtures of the operations tests: a server configuration with an rbac policy."""

from __future__ import annotations

from pathlib import Path

import pytest

#: alice may submit and handle her own jobs; viewer may read every job and do nothing else.
POLICY = """\
[roles.operator]
permissions = ["submit", "stop:own", "read:own"]

[roles.viewer]
permissions = ["read:all"]

[users]
alice = ["operator"]
viewer = ["viewer"]
"""


@pytest.fixture
def rbac_config(tmp_path: Path) -> Path:
    """A server.toml enabling the policy above (enable the plugin with ``--plugins rbac``)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "policy.toml").write_text(POLICY)
    config = etc / "server.toml"
    config.write_text('[plugins.rbac]\npolicy = "policy.toml"\n')
    return config
