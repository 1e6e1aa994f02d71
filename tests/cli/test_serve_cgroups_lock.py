"""The cgroup parent's lock file is gone after a clean shutdown, and removing it lets no two
engines in.

A real `worker serve` with the ``cgroups`` plugin, stopped by SIGTERM; then the lock's
protocol itself, including the moment another engine opened the file just before the holder
removed it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import force_remove_parent, require_root, unique_parent
from grpc_harness import RPC_TIMEOUT, serve_process, shell

from worker_core import Config, ConfigError, Engine
from worker_plugins.cgroups.config import CgroupsConfig
from worker_plugins.cgroups.parent_lock import ParentLock, lock_path
from worker_plugins.grpc_transport import worker_pb2 as pb

ROOT = CgroupsConfig().root


@pytest.fixture
def parent() -> Iterator[str]:
    require_root()
    name = unique_parent()
    try:
        yield name
    finally:
        force_remove_parent(name)


def test_serve_removes_the_lock_file_at_a_clean_shutdown(tmp_path: Path, parent: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[plugins.cgroups]\nparent = "{parent}"\n')
    lock = lock_path(ROOT, parent)
    with serve_process(tmp_path / "pki", "--plugins", "cgroups", "--config", str(config)) as serve:
        assert lock.exists()
        stub = serve.stub()
        stub.Submit(pb.SubmitRequest(spec=shell("sleep 300")), timeout=RPC_TIMEOUT)
        serve.process.terminate()
        assert serve.process.wait(timeout=60) == 0
    assert not lock.exists()


def test_an_engine_removes_its_lock_file_when_closed_and_the_next_one_takes_the_parent(
    parent: str,
) -> None:
    config = Config.from_mapping({"plugins": {"cgroups": {"parent": parent}}})
    lock = lock_path(ROOT, parent)
    for _ in range(2):
        with Engine(["cgroups"], config):
            assert lock.exists()
            with pytest.raises(ConfigError, match="another worker engine"):
                Engine(["cgroups"], config)
        assert not lock.exists()


def test_a_lock_file_left_by_a_crash_is_taken_over_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "parent.lock"
    path.write_text("")
    lock = ParentLock.acquire(path, "p")
    lock.release()
    assert not path.exists()
    lock.release()  # idempotent


def test_a_file_removed_between_open_and_lock_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: B opens the file, the holder A releases (removes it), B's flock succeeds on
    the removed file. B must take the file now at the path instead, so that C is refused."""
    path = tmp_path / "parent.lock"
    first = ParentLock.acquire(path, "p")
    real_flock = fcntl.flock
    calls = []

    def flock_after_release(fd: int, operation: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            first.release()  # between B's open and B's flock
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_release)
    second = ParentLock.acquire(path, "p")
    monkeypatch.undo()
    assert len(calls) == 2, "B should have retried on the new file"
    with pytest.raises(ConfigError, match="another worker engine"):
        ParentLock.acquire(path, "p")
    second.release()
    assert not path.exists()


def test_a_holder_does_not_remove_a_file_that_is_no_longer_its_own(tmp_path: Path) -> None:
    path = tmp_path / "parent.lock"
    lock = ParentLock.acquire(path, "p")
    path.unlink()  # someone removed it by hand, and another engine made a new one
    other = ParentLock.acquire(path, "p")
    lock.release()
    assert path.exists(), "the release removed the other engine's lock file"
    with pytest.raises(ConfigError):
        ParentLock.acquire(path, "p")
    other.release()
    assert not path.exists()
    # The stale descriptor is closed: nothing of ours is left open on the path.
    assert not any(
        os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
        for fd in map(int, os.listdir("/proc/self/fd"))
        if os.path.exists(f"/proc/self/fd/{fd}")
    )
