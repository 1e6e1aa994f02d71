"""Records through the job store: idempotent submit, id prefixes, pages, purge, retention, the
state directory's lock, the shutdown end reason, and the output facts of an ended job."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import running_engine

from worker_core import (
    AmbiguousJobId,
    Config,
    ConfigError,
    EndReason,
    Engine,
    EngineSettings,
    FailedPrecondition,
    InvalidSpec,
    JobNotFound,
    JobSpec,
    JobState,
    PermissionDenied,
    Principal,
)
from worker_core.plugin import Action, JobQuery, hookimpl

ALICE, BOB = Principal("alice"), Principal("bob")


class OwnersOnly:
    """Each principal reads, stops and purges only its own jobs; everyone may submit."""

    @hookimpl
    def authorize(self, principal, action, job):  # type: ignore[no-untyped-def]
        if action is Action.SUBMIT or job is None:
            return True
        return job.owner_name == principal.name


def test_an_idempotency_key_returns_the_first_job_and_starts_nothing_more() -> None:
    with running_engine() as engine:
        first = engine.submit(JobSpec("/bin/true"), ALICE, idempotency_key="build-42")
        again = engine.submit(JobSpec("/bin/false"), ALICE, idempotency_key="build-42")
        assert again.id == first.id
        assert engine.wait(first.id, 10).exit_code == 0, "the second spec never ran"
        other = engine.submit(JobSpec("/bin/true"), BOB, idempotency_key="build-42")
        assert other.id != first.id, "keys are per owner"
        assert len(engine.list()) == 2


def test_a_bad_idempotency_key_or_label_is_refused_and_nothing_is_recorded() -> None:
    with running_engine() as engine:
        with pytest.raises(InvalidSpec, match="idempotency_key"):
            engine.submit(JobSpec("/bin/true"), idempotency_key="a\nb")
        with pytest.raises(InvalidSpec, match=r"labels\['bad key'\]"):
            engine.submit(JobSpec("/bin/true", labels={"bad key": "v"}))
        with pytest.raises(InvalidSpec, match="name"):
            engine.submit(JobSpec("/bin/true", name="x" * 1000))
        assert engine.list() == []


def test_a_unique_prefix_names_a_job_and_an_ambiguous_one_lists_the_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ids are random: make three that share a prefix, so the ambiguity is certain.
    made = iter(["abcd1" + "0" * 27, "abcd2" + "0" * 27, "ffff" + "0" * 28])
    monkeypatch.setattr(uuid, "uuid4", lambda: SimpleNamespace(hex=next(made)))
    with running_engine() as engine:
        a, b, c = (engine.submit(JobSpec("/bin/true")) for _ in range(3))
        for job in (a, b, c):
            engine.wait(job.id, 10)
        assert engine.get("abcd1").id == a.id
        assert engine.get("ffff").id == c.id
        with pytest.raises(AmbiguousJobId) as info:
            engine.get("abcd")
        assert info.value.candidates == [a.id, b.id]
        assert a.id in str(info.value) and b.id in str(info.value)
        with pytest.raises(InvalidSpec, match="at least 4"):
            engine.get("abc")
        with pytest.raises(JobNotFound):
            engine.get("zzzz")
        with pytest.raises(JobNotFound):
            engine.get("0123")


def test_a_prefix_only_matches_jobs_the_caller_may_read() -> None:
    with running_engine([OwnersOnly()]) as engine:
        mine = engine.submit(JobSpec("/bin/true"), ALICE)
        engine.wait(mine.id, 10)
        assert engine.get(mine.id[:8], ALICE).id == mine.id
        with pytest.raises(JobNotFound):
            engine.get(mine.id[:8], BOB)


def test_pages_are_newest_first_and_none_is_skipped_or_repeated() -> None:
    with running_engine() as engine:
        ids = [engine.submit(JobSpec("/bin/true", labels={"n": str(i % 3)})).id for i in range(25)]
        seen: list[str] = []
        token = ""
        while True:
            page = engine.list_page(page_size=7, page_token=token)
            assert len(page.jobs) <= 7
            seen.extend(job.id for job in page.jobs)
            # Submits meanwhile never show up in later pages.
            engine.submit(JobSpec("/bin/true"))
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(ids))
        labelled = engine.list_page(JobQuery(labels={"n": "1"}), page_size=100)
        assert {j.id for j in labelled.jobs} == {ids[i] for i in range(25) if i % 3 == 1}
        assert engine.list_page(JobQuery(name="nope")).jobs == []


def test_a_malformed_page_token_or_size_is_a_clear_error() -> None:
    with running_engine() as engine:
        with pytest.raises(InvalidSpec, match="page_token"):
            engine.list_page(page_token="garbage")
        with pytest.raises(InvalidSpec, match="page_size"):
            engine.list_page(page_size=-1)


def test_purge_removes_finished_jobs_and_refuses_running_ones_all_or_nothing() -> None:
    with running_engine([OwnersOnly()]) as engine:
        done = engine.submit(JobSpec("sh", args=["-c", "echo out"]), ALICE)
        engine.wait(done.id, 10)
        running = engine.submit(JobSpec("/bin/sleep", args=["30"]), ALICE)
        with pytest.raises(FailedPrecondition, match="stop it before purging"):
            engine.purge([done.id, running.id], ALICE)
        assert engine.get(done.id).id == done.id, "nothing was removed"
        with pytest.raises(JobNotFound):
            engine.purge([done.id], BOB)  # bob may not even see it
        assert engine.purge([done.id[:10]], ALICE) == [done.id]
        with pytest.raises(JobNotFound):
            engine.get(done.id)
        with pytest.raises(JobNotFound):
            engine.output(done.id)
        engine.stop(running.id, grace=0)


def test_purge_matching_removes_only_what_the_caller_may_purge() -> None:
    class NoPurgeForBob(OwnersOnly):
        @hookimpl
        def authorize(self, principal, action, job):  # type: ignore[no-untyped-def]
            if action is Action.PURGE and principal.name == "bob":
                return False
            return super().authorize(principal, action, job)

    with running_engine([NoPurgeForBob()]) as engine:
        a = engine.submit(JobSpec("/bin/true"), ALICE)
        b = engine.submit(JobSpec("/bin/true"), BOB)
        engine.wait(a.id, 10)
        engine.wait(b.id, 10)
        assert engine.purge_matching(JobQuery(), BOB) == []
        assert engine.purge_matching(JobQuery(), ALICE) == [a.id]
        assert [j.id for j in engine.list()] == [b.id]
        with pytest.raises(PermissionDenied):
            engine.purge([b.id], BOB)


def test_retention_keeps_the_newest_finished_jobs_and_never_a_running_one() -> None:
    with running_engine(max_finished_jobs=3) as engine:
        running = engine.submit(JobSpec("/bin/sleep", args=["30"]))
        ids = []
        for _ in range(6):
            job = engine.submit(JobSpec("sh", args=["-c", "echo x"]))
            engine.wait(job.id, 10)
            ids.append(job.id)
        removed = engine.apply_retention()
        assert set(removed) == set(ids[:3])
        left = {j.id for j in engine.list()}
        assert left == {running.id, *ids[3:]}
        engine.stop(running.id, grace=0)


def test_retention_by_output_bytes_counts_the_newest_first() -> None:
    with running_engine(max_finished_output_bytes=2500) as engine:
        ids = []
        for _ in range(4):
            job = engine.submit(JobSpec("sh", args=["-c", "head -c 1000 /dev/zero"]))
            ended = engine.wait(job.id, 10)
            assert ended.facts["output_bytes"] == 1000
            ids.append(job.id)
        assert set(engine.apply_retention()) == set(ids[:2])


def test_an_ended_job_records_its_output_bytes() -> None:
    with running_engine() as engine:
        job = engine.submit(JobSpec("sh", args=["-c", "printf abc; printf de >&2"]))
        ended = engine.wait(job.id, 10)
        assert ended.facts["output_bytes"] == 5
        assert "output_lost_bytes" not in ended.facts


def test_closing_the_engine_ends_running_jobs_with_reason_shutdown() -> None:
    engine = Engine(config=Config(engine=EngineSettings(stop_grace=1))).start()
    job = engine.submit(JobSpec("/bin/sleep", args=["30"]))
    engine.close()
    ended = engine.get(job.id)
    assert ended.end_reason is EndReason.SHUTDOWN
    assert "shut down" in ended.message


def test_the_state_directory_is_made_private_and_locked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = Config(engine=EngineSettings(state_dir=str(state)))
    with Engine(config=config) as engine:
        assert engine.state_dir == state
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / "lock").stat().st_mode) == 0o600
        with pytest.raises(
            ConfigError, match=rf"{state} is in use by another worker \(pid {os.getpid()}\)"
        ):
            Engine(config=config).start()
        # Another process is refused too (flock is per open file, across processes).
        code = (
            "from worker_core import Engine, Config, EngineSettings, ConfigError\n"
            f"e = Engine(config=Config(engine=EngineSettings(state_dir={str(state)!r})))\n"
            "try:\n    e.start()\nexcept ConfigError as exc:\n    print(exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        assert "is in use by another worker" in out
    with Engine(config=config):  # released at close
        pass


def test_a_state_directory_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    config = Config(engine=EngineSettings(state_dir=str(target)))
    with pytest.raises(ConfigError, match="state directory"):
        Engine(config=config).start()


def test_the_memory_store_keeps_queued_state_in_records() -> None:
    with running_engine() as engine:
        held = engine.submit(JobSpec("/bin/true", hold=True))
        assert held.state is JobState.HELD
        assert engine.get(held.id).state is JobState.HELD
        engine.stop(held.id)
        assert engine.get(held.id).end_reason is EndReason.STOPPED
