"""Fixtures of the command-line tests.

``harness`` is a plain server (a real engine behind a real mTLS gRPC server on 127.0.0.1),
one per test module, and ``env`` the environment of a ``worker job`` client (alice) of it. A
module that needs another server, or another client, defines its own fixture of that name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grpc_harness import Harness, running_server
from job_cli_harness import client_env


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_server(tmp_path_factory.mktemp("job-cli")) as h:
        yield h


@pytest.fixture(scope="module")
def env(harness: Harness) -> dict[str, str]:
    return client_env(harness)
