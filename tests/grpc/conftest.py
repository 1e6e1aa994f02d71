"""Fixtures of the gRPC tests.

``harness`` is a plain server (a real engine behind a real mTLS gRPC server on 127.0.0.1),
one per test module. A module that needs another server (plugins, a policy, a config)
defines its own ``harness``, which takes precedence over this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grpc_harness import Harness, running_server


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_server(tmp_path_factory.mktemp("pki")) as h:
        yield h
