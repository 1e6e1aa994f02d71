"""Fixtures of the engine tests.

``engine`` is a running engine with the short timings of :data:`helpers.FAST` and a
:class:`helpers.Recorder` of every job event (``recorder``), closed (every job stopped) after
the test. A module that needs another engine defines its own fixture of that name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Recorder, running_engine

from worker_core import Engine


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def engine(recorder: Recorder) -> Iterator[Engine]:
    with running_engine([recorder]) as engine:
        yield engine
