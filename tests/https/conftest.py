"""Fixtures of the HTTPS transport tests (the harness is :mod:`https_harness`).

``server`` is one ``worker serve --plugins https,rbac`` per test module, with the example
policy; a module that needs another server defines its own ``server``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from https_harness import HttpsServer, https_serve


@pytest.fixture(autouse=True, scope="session")
def _needs_curl() -> None:
    if shutil.which("curl") is None:  # CI installs it
        pytest.skip("curl is not installed (apt-get install -y curl)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    """One server per module, with the example policy (``rbac``)."""
    with https_serve(tmp_path_factory.mktemp("https")) as running:
        yield running
