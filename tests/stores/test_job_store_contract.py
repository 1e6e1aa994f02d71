"""One contract for every job store: the memory store and the SQLite store (on a real file)
must answer the engine the same way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from jobstore_helpers import ended, make_job, running

from worker_core.plugin import FinishedSummary, JobQuery, JobState, JobStore, Principal
from worker_plugins.memory.jobs import MemoryJobStore
from worker_plugins.sqlite import SqliteJobStore

THREAD_TIMEOUT = 60.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made: JobStore = (
        MemoryJobStore() if request.param == "memory" else SqliteJobStore(tmp_path / "jobs.sqlite3")
    )
    assert isinstance(made, JobStore)
    try:
        yield made
    finally:
        made.close()


def ids(records: list) -> list[str]:  # type: ignore[type-arg]
    return [r.job.id for r in records]


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(THREAD_TIMEOUT)
        assert not t.is_alive(), "a store call did not return"


# -- records ----------------------------------------------------------------------------------


def test_an_added_record_reads_back_equal_and_updates_replace_it(store: JobStore) -> None:
    job = make_job(name="build", labels={"team": "infra"})
    assert store.add(job) == job
    assert store.get(job.id) == job
    started = running(job)
    store.update(started)
    assert store.get(job.id) == started
    finished = ended(started, output_bytes=123, memory_peak=1 << 20)
    store.update(finished)
    assert store.get(job.id) == finished
    assert store.get("0" * 32) is None


def test_an_update_may_change_any_field_and_queries_follow(store: JobStore) -> None:
    job = make_job(owner="alice", name="old", labels={"a": "1", "b": "2"})
    store.add(job)
    same_state = attrs.evolve(job, facts={"progress": 0.5})
    store.update(same_state)
    assert store.get(job.id) == same_state
    renamed = attrs.evolve(
        same_state,
        owner=Principal("bob"),
        spec=attrs.evolve(job.spec, name="new", labels={"a": "9", "c": "3"}),
    )
    store.update(renamed)
    assert store.get(job.id) == renamed
    found = lambda **f: [r.job.id for r in store.query(JobQuery(**f))]  # noqa: E731
    assert found(owner="bob", name="new", labels={"a": "9", "c": "3"}) == [job.id]
    assert found(owner="alice") == found(name="old") == found(labels={"b": "2"}) == []
    assert found(labels={"a": "1"}) == []


def test_a_record_keeps_every_field(store: JobStore) -> None:
    job = ended(
        running(make_job(owner=None, args=("-c", "echo é \x01 'q' \"d\""), key="k1")),
        output_bytes=7,
        oom_killed=False,
        cpu_seconds=0.25,
    )
    store.add(job)
    got = store.get(job.id)
    assert got == job
    assert got is not None and got.facts["cpu_seconds"] == 0.25 and got.owner is None


def test_adding_an_id_twice_is_refused(store: JobStore) -> None:
    job = make_job()
    store.add(job)
    with pytest.raises(ValueError, match=job.id):
        store.add(attrs.evolve(job, spec=attrs.evolve(job.spec, name="other")))
    assert store.get(job.id) == job


def test_an_update_of_a_removed_record_is_ignored(store: JobStore) -> None:
    job = make_job()
    store.add(job)
    store.remove([job.id])
    store.update(running(job))
    assert store.get(job.id) is None
    assert store.query(JobQuery()) == []


# -- idempotency ------------------------------------------------------------------------------


def test_an_idempotent_add_returns_the_first_record_of_that_owner_and_key(
    store: JobStore,
) -> None:
    first = make_job(owner="alice", key="nightly")
    assert store.add(first) == first
    again = make_job(owner="alice", key="nightly")
    assert store.add(again) == first
    assert store.get(again.id) is None, "nothing is committed for the second submit"
    # The key is per owner, and a job without an owner is an owner of its own.
    bob = make_job(owner="bob", key="nightly")
    nobody = make_job(owner=None, key="nightly")
    empty_name = make_job(owner="", key="nightly")
    assert store.add(bob) == bob
    assert store.add(nobody) == nobody
    assert store.add(empty_name) == empty_name
    assert store.add(make_job(owner=None, key="nightly")) == nobody
    # Without a key, every add is a new record.
    plain = [make_job(owner="alice") for _ in range(2)]
    assert [store.add(j) for j in plain] == plain
    assert len(store.query(JobQuery())) == 6


def test_the_first_record_is_returned_in_its_latest_state(store: JobStore) -> None:
    first = make_job(key="k")
    store.add(first)
    store.update(ended(running(first)))
    assert store.add(make_job(key="k")) == ended(running(first))


def test_a_removed_record_frees_its_key(store: JobStore) -> None:
    first = make_job(key="k")
    store.add(first)
    store.remove([first.id])
    second = make_job(key="k")
    assert store.add(second) == second


def test_concurrent_idempotent_adds_leave_exactly_one_record(store: JobStore) -> None:
    threads_count = 8
    barrier = threading.Barrier(threads_count, timeout=THREAD_TIMEOUT)
    results: list[str] = []
    errors: list[BaseException] = []

    def submit(round_key: str) -> None:
        try:
            barrier.wait()
            results.append(store.add(make_job(owner="alice", key=round_key)).id)
        except BaseException as exc:
            errors.append(exc)

    for round_number in range(10):
        results.clear()
        key = f"key-{round_number}"
        threads = [threading.Thread(target=submit, args=(key,)) for _ in range(threads_count)]
        for t in threads:
            t.start()
        join_all(threads)
        assert not errors
        assert len(results) == threads_count and len(set(results)) == 1, results
        assert [store.get(results[0]) is not None] == [True]
    assert len(store.query(JobQuery(limit=1000))) == 10


# -- query ------------------------------------------------------------------------------------


def _populate(store: JobStore) -> dict[str, str]:
    """Six jobs with distinct owners, names, labels, times and states; returns name -> id."""
    base = 1_700_000_000.0
    jobs = {
        "a": make_job(owner="alice", name="build", labels={"team": "infra", "tier": "1"}),
        "b": make_job(owner="bob", name="build", labels={"team": "infra"}),
        "c": make_job(owner="alice", name="test", labels={"team": "web", "tier": "1"}),
        "d": make_job(owner="carol", name="deploy"),
        "e": make_job(owner="alice", name="build", labels={"tier": "1"}),
        "f": make_job(owner=None, name="build", labels={"team": "infra", "tier": "1"}),
    }
    for i, (letter, new) in enumerate(jobs.items()):
        job = attrs.evolve(new, created_at=base + 100 * i)
        store.add(job)
        if letter in "abc":
            store.update(ended(running(job), at=base + 100 * i + 50))
        elif letter == "d":
            store.update(running(job))
        jobs[letter] = job
    return {letter: job.id for letter, job in jobs.items()}


def _letters(store: JobStore, ids_by_letter: dict[str, str], **filters: object) -> str:
    letter_of = {v: k for k, v in ids_by_letter.items()}
    return "".join(letter_of[i] for i in ids(store.query(JobQuery(**filters))))  # type: ignore[arg-type]


def test_query_is_newest_first_with_increasing_sequence_numbers(store: JobStore) -> None:
    by = _populate(store)
    records = store.query(JobQuery())
    assert _letters(store, by) == "fedcba"
    seqs = [r.seq for r in records]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 6


def test_query_filters_each_alone_and_together(store: JobStore) -> None:
    by = _populate(store)
    base = 1_700_000_000.0
    q = lambda **f: _letters(store, by, **f)  # noqa: E731
    assert q(states=frozenset({JobState.ENDED})) == "cba"
    assert q(states=frozenset({JobState.RUNNING, JobState.QUEUED})) == "fed"
    assert q(owner="alice") == "eca"
    assert q(owner="nobody") == ""
    assert q(name="build") == "feba"
    assert q(labels={"team": "infra"}) == "fba"
    assert q(labels={"team": "infra", "tier": "1"}) == "fa", "every label must match"
    assert q(labels={"team": "nope"}) == ""
    assert q(labels={"tier": "1", "team": "web"}) == "c"
    # Time filters are strict: "after t" excludes a record created at exactly t.
    assert q(created_after=base + 100) == "fedc"
    assert q(created_before=base + 200) == "ba"
    assert q(created_after=base + 100, created_before=base + 400) == "dc"
    assert q(ended_after=base + 50) == "cb"
    assert q(ended_before=base + 150) == "a"
    assert q(ended_after=base) == "cba", "records not ended never match an ended range"
    # Empty filters do not filter.
    assert q(owner="", name="", labels={}, states=frozenset()) == "fedcba"
    assert q(owner="alice", name="build", labels={"tier": "1"}) == "ea"
    assert q(owner="alice", states=frozenset({JobState.ENDED}), created_after=base + 50) == "c"


def test_query_limit_and_cursor(store: JobStore) -> None:
    by = _populate(store)
    first = store.query(JobQuery(limit=4))
    assert len(first) == 4
    rest = store.query(JobQuery(limit=4, before_seq=first[-1].seq))
    assert [r.job.id for r in first + rest] == [by[x] for x in "fedcba"]
    assert store.query(JobQuery(limit=4, before_seq=rest[-1].seq)) == []
    assert _letters(store, by, name="build", limit=2, before_seq=first[1].seq) == "ba"
    assert store.query(JobQuery(limit=0)) == []
    with pytest.raises(ValueError, match="limit"):
        store.query(JobQuery(limit=-1))


def test_sequence_numbers_are_never_reused(store: JobStore) -> None:
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.add(job)
    top = store.query(JobQuery(limit=1))[0].seq
    store.remove([jobs[-1].id])
    newer = make_job()
    store.add(newer)
    assert store.query(JobQuery(limit=1))[0].seq > top


def test_pagination_with_concurrent_adds_skips_and_repeats_nothing(store: JobStore) -> None:
    existing = set()
    for i in range(2000):
        job = make_job(owner=f"user{i % 7}", name="batch")
        store.add(job)
        existing.add(job.id)
    stop = threading.Event()
    added: list[str] = []
    errors: list[BaseException] = []

    def keep_adding() -> None:
        try:
            while not stop.is_set() and len(added) < 5000:
                job = make_job(name="batch")
                store.add(job)
                added.append(job.id)
        except BaseException as exc:
            errors.append(exc)

    adders = [threading.Thread(target=keep_adding) for _ in range(2)]
    for t in adders:
        t.start()
    seen: list[str] = []
    cursor: int | None = None
    try:
        for _ in range(1000):  # bounded: 2,000 records at 7 a page need about 300 pages
            page = store.query(JobQuery(name="batch", limit=7, before_seq=cursor))
            if not page:
                break
            seqs = [r.seq for r in page]
            assert seqs == sorted(seqs, reverse=True)
            assert cursor is None or seqs[0] < cursor
            seen.extend(r.job.id for r in page)
            cursor = page[-1].seq
        else:
            pytest.fail("paging did not end")
    finally:
        stop.set()
        join_all(adders)
    assert not errors
    assert len(seen) == len(set(seen)), "a record was repeated"
    assert existing <= set(seen), f"{len(existing - set(seen))} records were skipped"
    assert added, "the adders ran while paging"
    assert set(seen) <= existing | set(added)


# -- prefixes, recovery, retention, removal ---------------------------------------------------


def test_ids_with_prefix(store: JobStore) -> None:
    for job_id in ["abc123", "abc456", "abd000", "ABC999", "b"]:
        store.add(make_job(job_id=job_id))
    assert store.ids_with_prefix("abc", 10) == ["abc123", "abc456"]
    assert store.ids_with_prefix("ab", 10) == ["abc123", "abc456", "abd000"]
    assert store.ids_with_prefix("ab", 2) == ["abc123", "abc456"]
    assert store.ids_with_prefix("abc123", 10) == ["abc123"]
    assert store.ids_with_prefix("abc1234", 10) == []
    assert store.ids_with_prefix("ABC", 10) == ["ABC999"], "case-sensitive"
    assert store.ids_with_prefix("", 10) == ["ABC999", "abc123", "abc456", "abd000", "b"]
    assert store.ids_with_prefix("ab", 0) == []
    with pytest.raises(ValueError, match="limit"):
        store.ids_with_prefix("ab", -1)


@pytest.mark.parametrize(
    "wildcard", ["%", "_", "*", "?", "[", "[a-z]", "\\", "'", "\x00", "\udcff"]
)
def test_wildcards_in_a_prefix_match_only_themselves(store: JobStore, wildcard: str) -> None:
    stored = ["abc", "axc", "a%c", "a_c", "a*c", "a?c", "a[c", "a\\c", "a'c", "a[a-z]c"]
    for job_id in stored:
        store.add(make_job(job_id=job_id))
    prefix = "a" + wildcard
    assert store.ids_with_prefix(prefix, 100) == sorted(i for i in stored if i.startswith(prefix))


def test_unfinished_is_every_record_not_ended_in_submission_order(store: JobStore) -> None:
    jobs = [make_job() for _ in range(6)]
    for job in jobs:
        store.add(job)
    store.update(running(jobs[4]))
    store.update(ended(running(jobs[1])))
    store.update(ended(jobs[3]))
    store.update(running(jobs[0]))
    store.remove([jobs[5].id])
    assert store.unfinished() == [running(jobs[0]), jobs[2], running(jobs[4])]


def test_finished_is_most_recently_ended_first(store: JobStore) -> None:
    base = 1_700_000_000.0
    jobs = [make_job(created_at=base + i) for i in range(5)]
    for job in jobs:
        store.add(job)
    end_times = [base + 30, base + 10, None, base + 20, base + 30]
    for job, at in zip(jobs, end_times, strict=True):
        if at is not None:
            store.update(ended(running(job), at=at, output_bytes=int(at - base) * 1000))
    summaries = list(store.finished())
    assert summaries == [
        FinishedSummary(jobs[4].id, base + 30, 30_000),  # same time: the later submitted first
        FinishedSummary(jobs[0].id, base + 30, 30_000),
        FinishedSummary(jobs[3].id, base + 20, 20_000),
        FinishedSummary(jobs[1].id, base + 10, 10_000),
    ]
    # A finished job without the output fact counts 0 bytes.
    late = make_job(created_at=base + 100)
    store.add(late)
    store.update(ended(late, at=base + 100))
    assert next(iter(store.finished())) == FinishedSummary(late.id, base + 100, 0)


def test_finished_streams_more_records_than_one_batch_in_order(store: JobStore) -> None:
    base = 1_700_000_000.0
    count = 1234  # more than the SQLite store's batch of 500, with ties across batches
    for i in range(count):
        job = make_job(created_at=base)
        store.add(job)
        store.update(ended(job, at=base + i // 3))
    summaries = list(store.finished())
    assert len(summaries) == count == len({s.job_id for s in summaries})
    times = [s.ended_at for s in summaries]
    assert times == sorted(times, reverse=True)


def test_remove_deletes_records_and_their_labels(store: JobStore) -> None:
    keep = make_job(labels={"team": "infra"})
    gone = [make_job(labels={"team": "infra"}, key=f"k{i}") for i in range(3)]
    for job in [keep, *gone]:
        store.add(job)
    store.update(ended(gone[0]))
    store.remove([j.id for j in gone] + ["not-a-job", gone[0].id])
    assert [store.get(j.id) for j in gone] == [None, None, None]
    assert ids(store.query(JobQuery(labels={"team": "infra"}))) == [keep.id]
    assert list(store.finished()) == []
    assert store.unfinished() == [keep]
    assert store.ids_with_prefix(gone[1].id, 10) == []
    store.remove([])
    assert store.get(keep.id) == keep


def test_remove_of_many_records_at_once(store: JobStore) -> None:
    jobs = [make_job() for _ in range(1200)]
    for job in jobs:
        store.add(job)
    store.remove([j.id for j in jobs[:1100]])
    assert ids(store.query(JobQuery(limit=1000))) == [j.id for j in reversed(jobs[1100:])]
