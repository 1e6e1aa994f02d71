"""Model <-> wire conversions, and how Tail batches chunks into messages."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker_core import (
    EndReason,
    IOLimit,
    Isolation,
    Job,
    JobSpec,
    JobState,
    Limits,
    Principal,
    StartAt,
    Stream,
)
from worker_core._errors import InvalidSpec
from worker_core._output import Chunk
from worker_core.plugin import Dependency, DependencyKind, JobQuery, QueueReason
from worker_plugins.grpc_transport import convert
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.batching import EncodedChunk, batch, encode_output_chunk

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20)
positive = st.integers(min_value=1, max_value=convert.MAX_INT_LIMIT)
weights = st.integers(min_value=1, max_value=10000)
cores = st.floats(min_value=0.01, max_value=512, allow_nan=False)

specs = st.builds(
    JobSpec,
    command=text.filter(bool),
    args=st.lists(text, max_size=4),
    env=st.dictionaries(text, text, max_size=4),
    cwd=st.just("/tmp"),
    limits=st.builds(
        Limits,
        memory_max=st.none() | positive,
        memory_high=st.none() | positive,
        cpu=st.none() | cores,
        cpu_weight=st.none() | weights,
        io_weight=st.none() | weights,
        io=st.lists(
            st.builds(IOLimit, device=st.just("8:0"), read_bps=st.none() | positive), max_size=2
        ),
        pids_max=st.none() | st.integers(min_value=1, max_value=2**31),
    ),
    isolation=st.builds(
        Isolation,
        uid=st.none() | st.integers(0, 2**32 - 2),
        gid=st.none() | st.integers(0, 2**32 - 2),
    ),
    timeout=st.none() | st.floats(min_value=0.001, max_value=1e6),
    options=st.dictionaries(text, text, max_size=2),
    name=text,
    labels=st.dictionaries(text, text, max_size=3),
    priority=st.integers(-1000, 1000),
    after=st.lists(
        st.builds(Dependency, job_id=text.filter(bool), kind=st.sampled_from(DependencyKind)),
        max_size=3,
    ),
    hold=st.booleans(),
    begin_at=st.none() | st.floats(min_value=0, max_value=4e9),
)


@given(specs)
def test_spec_round_trip(spec: JobSpec) -> None:
    assert convert.spec_from_pb(convert.spec_to_pb(spec)) == spec


def test_job_round_trip_with_typed_facts() -> None:
    job = Job(
        id="abc",
        owner=Principal("alice"),
        spec=JobSpec("/bin/true"),
        state=JobState.ENDED,
        pid=42,
        exit_code=0,
        end_reason=EndReason.OOM_KILLED,
        message="killed",
        started_at=1.5,
        ended_at=2.5,
        facts={
            "oom_killed": True,
            "memory_peak": 1024,
            "big": 2**60 + 1,
            "cpu_seconds": 0.25,
            "whole_seconds": 2.0,
            "note": "x",
            "nan": math.nan,
            "nested": {"a": [1, "b", None]},
        },
        queue_reason=None,
        idempotency_key="retry-7",
    )
    message = convert.job_to_pb(job)
    assert dict(message.facts) == {
        "oom_killed": "true",
        "memory_peak": "1024",
        "big": str(2**60 + 1),
        "cpu_seconds": "0.25",
        "whole_seconds": "2.0",
        "note": "x",
        "nan": "nan",
        "nested": "{'a': [1, 'b', None]}",
    }
    back = convert.job_from_pb(message)
    # Typed from fact_values; integers exact (from the text), a float stays a float.
    assert back.facts == {
        "oom_killed": True,
        "memory_peak": 1024,
        "big": 2**60 + 1,
        "cpu_seconds": 0.25,
        "whole_seconds": 2.0,
        "note": "x",
        "nan": "nan",
        "nested": {"a": [1.0, "b", None]},
    }
    assert type(back.facts["memory_peak"]) is int and type(back.facts["whole_seconds"]) is float
    assert back.idempotency_key == "retry-7" and back.queue_reason is None
    # An older server sends text only: the client shows the text.
    message.ClearField("fact_values")
    assert convert.job_from_pb(message).facts == dict(message.facts)
    assert (back.id, back.owner, back.state, back.end_reason, back.pid, back.signal) == (
        "abc",
        Principal("alice"),
        JobState.ENDED,
        EndReason.OOM_KILLED,
        42,
        None,
    )
    assert (back.exit_code, back.started_at, back.ended_at, back.created_at) == (
        0,
        1.5,
        2.5,
        job.created_at,
    )


def test_unowned_running_job() -> None:
    message = convert.job_to_pb(Job(id="j", owner=None, spec=JobSpec("/bin/true")))
    assert message.owner == ""
    assert message.end_reason == pb.END_REASON_UNSPECIFIED
    assert not message.HasField("pid")
    back = convert.job_from_pb(message)
    assert back.owner is None and back.end_reason is None and back.pid is None


def test_enum_tables_are_complete() -> None:
    assert set(convert.STATE_TO_PB) == set(JobState)
    assert set(convert.END_REASON_TO_PB) == set(EndReason)
    assert set(convert.STREAM_TO_PB) == set(Stream)
    assert set(convert.QUEUE_REASON_TO_PB) == set(QueueReason)
    assert set(convert.DEPENDENCY_KIND_TO_PB) == set(DependencyKind)
    # Every wire value but UNSPECIFIED has a model value, and the other way round.
    for table, enum in (
        (convert.STATE_FROM_PB, pb.JobState),
        (convert.END_REASON_FROM_PB, pb.EndReason),
        (convert.QUEUE_REASON_FROM_PB, pb.QueueReason),
    ):
        assert set(table) == set(enum.values()) - {0}
    assert set(convert.DEPENDENCY_KIND_FROM_PB) == set(pb.DependencyKind.values())


def test_queued_job_with_its_reason() -> None:
    job = Job(
        id="q",
        owner=None,
        spec=JobSpec("/bin/true"),
        state=JobState.QUEUED,
        queue_reason=QueueReason.RUNNING_CAP,
    )
    message = convert.job_to_pb(job)
    assert (message.state, message.queue_reason) == (
        pb.JOB_STATE_QUEUED,
        pb.QUEUE_REASON_RUNNING_CAP,
    )
    back = convert.job_from_pb(message)
    assert (back.state, back.queue_reason, back.idempotency_key) == (
        JobState.QUEUED,
        QueueReason.RUNNING_CAP,
        None,
    )


def test_a_dependency_of_unspecified_kind_is_ok() -> None:
    message = pb.JobSpec(command="x", after=[pb.Dependency(job_id="abcd")])
    assert convert.spec_from_pb(message).after == (Dependency("abcd", DependencyKind.OK),)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.JobSpec(), "command"),
        (pb.JobSpec(command="a\0"), "command"),
        (pb.JobSpec(command="x", args=["ok", "b\0"]), "args[1]"),
        (pb.JobSpec(command="x", env={"K\0": "v"}), "env['K\\x00']"),
        (pb.JobSpec(command="x", cwd="/tm\0p"), "cwd"),
        (pb.JobSpec(command="x", options={"a.b": "\0"}), "options['a.b']"),
        (pb.JobSpec(command="x", limits=pb.Limits(memory_max=2**63)), "limits.memory_max"),
        (pb.JobSpec(command="x", limits=pb.Limits(pids_max=0)), "limits.pids_max"),
        (pb.JobSpec(command="x", limits=pb.Limits(cpu=math.inf)), "limits.cpu"),
        (pb.JobSpec(command="x", limits=pb.Limits(cpu=-1)), "limits.cpu"),
        (pb.JobSpec(command="x", limits=pb.Limits(io_weight=0)), "limits.io_weight"),
        (pb.JobSpec(command="x", limits=pb.Limits(io=[pb.IOLimit()])), "limits.io[0].device"),
        (
            pb.JobSpec(command="x", limits=pb.Limits(io=[pb.IOLimit(device="8:0", read_bps=0)])),
            "limits.io.read_bps",
        ),
        (pb.JobSpec(command="x", isolation=pb.Isolation(gid=2**32 - 1)), "isolation.gid"),
        (pb.JobSpec(command="x", timeout_seconds=math.nan), "timeout_seconds"),
        (pb.JobSpec(command="x", timeout_seconds=0), "timeout_seconds"),
        (pb.JobSpec(command="x", name="a\0"), "name"),
        (pb.JobSpec(command="x", labels={"k": "\0"}), "labels['k']"),
        (pb.JobSpec(command="x", priority=1001), "priority"),
        (pb.JobSpec(command="x", priority=-(2**31)), "priority"),
        (pb.JobSpec(command="x", after=[pb.Dependency()]), "after[0].job_id"),
        (
            pb.JobSpec(command="x", after=[pb.Dependency(job_id="abcd", kind=9)]),  # type: ignore[arg-type]
            "after[0].kind",
        ),
        (pb.JobSpec(command="x", begin_at=math.inf), "begin_at"),
        (pb.JobSpec(command="x", begin_at=-1), "begin_at"),
    ],
)
def test_bad_specs_name_the_field(message: pb.JobSpec, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        convert.spec_from_pb(message)
    assert info.value.field == field


def test_empty_cwd_is_root() -> None:
    assert convert.spec_from_pb(pb.JobSpec(command="x")).cwd == "/"


def test_tail_request_fields() -> None:
    assert convert.streams_from_pb(pb.STREAM_UNSPECIFIED) == {Stream.STDOUT, Stream.STDERR}
    assert convert.streams_from_pb(pb.STREAM_STDERR) == {Stream.STDERR}
    with pytest.raises(InvalidSpec):
        convert.streams_from_pb(7)
    assert convert.start_from_pb(pb.TailRequest()) is StartAt.BEGINNING
    assert convert.start_from_pb(pb.TailRequest(from_end=True)) is StartAt.END
    offsets = pb.TailRequest(from_offsets=pb.Offsets(stdout=5, stderr=7))
    assert convert.start_from_pb(offsets) == {Stream.STDOUT: 5, Stream.STDERR: 7}
    for start in (StartAt.BEGINNING, StartAt.END, {Stream.STDOUT: 3}):
        request = pb.TailRequest()
        convert.start_to_pb(request, start)
        expected = start if not isinstance(start, dict) else {Stream.STDOUT: 3, Stream.STDERR: 0}
        assert convert.start_from_pb(request) == expected
    assert convert.states_from_pb([]) is None
    assert convert.states_from_pb([pb.JOB_STATE_ENDED]) == {JobState.ENDED}


def test_list_request_to_query_and_back() -> None:
    query = JobQuery(
        states=frozenset({JobState.ENDED, JobState.QUEUED}),
        owner="bob",
        name="nightly",
        labels={"team": "data", "tier": ""},
        created_after=10.0,
        created_before=20.0,
        ended_after=30.0,
        ended_before=40.0,
    )
    request = convert.query_to_pb(query, page_size=7, page_token="t")
    assert (request.page_size, request.page_token) == (7, "t")
    assert convert.query_from_pb(request) == query
    # Empty fields do not filter.
    assert convert.query_from_pb(pb.ListRequest()) == JobQuery()


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListRequest(states=[99]), "states[0]"),  # type: ignore[list-item]
        (pb.ListRequest(states=[pb.JOB_STATE_UNSPECIFIED]), "states[0]"),
        (pb.ListRequest(created_after=-1), "created_after"),
        (pb.ListRequest(created_before=math.nan), "created_before"),
        (pb.ListRequest(ended_after=math.inf), "ended_after"),
        (pb.ListRequest(ended_before=-math.inf), "ended_before"),
        (pb.ListRequest(owner="a\0"), "owner"),
        (pb.ListRequest(name="a\0"), "name"),
        (pb.ListRequest(labels={"k\0": "v"}), "labels['k\\x00']"),
    ],
)
def test_bad_list_requests_name_the_field(request_: pb.ListRequest, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        convert.query_from_pb(request_)
    assert info.value.field == field


def test_purge_requests() -> None:
    assert convert.purge_query_from_pb(pb.PurgeRequest(job_ids=["abcd"])) is None
    assert convert.purge_query_from_pb(pb.PurgeRequest(ended_before=5.0)) == JobQuery(
        ended_before=5.0
    )
    assert convert.purge_query_from_pb(pb.PurgeRequest(owner="bob")) == JobQuery(owner="bob")
    for request, field in (
        (pb.PurgeRequest(), "job_ids"),  # purging everything must be asked for
        (pb.PurgeRequest(job_ids=["abcd"], ended_before=5.0), "ended_before"),
        (pb.PurgeRequest(job_ids=["abcd"], owner="bob"), "owner"),
        (pb.PurgeRequest(job_ids=["abcd", ""]), "job_ids[1]"),
        (pb.PurgeRequest(ended_before=math.nan), "ended_before"),
    ):
        with pytest.raises(InvalidSpec) as info:
            convert.purge_query_from_pb(request)
        assert info.value.field == field


def _chunks(*parts: tuple[Stream, int, bytes]) -> list[Chunk]:
    return [Chunk("j", s, o, d) for s, o, d in parts]


def test_batch_merges_adjacent_chunks_of_one_stream() -> None:
    out, err = Stream.STDOUT, Stream.STDERR
    messages = list(
        batch(
            _chunks(
                (out, 0, b"ab"), (out, 2, b"cd"), (err, 0, b"x"), (out, 4, b"e"), (out, 5, b"f")
            ),
            limit=100,
        )
    )
    assert [(m.stream, m.offset, m.data) for m in messages] == [
        (pb.STREAM_STDOUT, 0, b"abcd"),
        (pb.STREAM_STDERR, 0, b"x"),
        (pb.STREAM_STDOUT, 4, b"ef"),
    ]


def test_batch_splits_at_the_limit_and_keeps_offsets() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    chunks = _chunks((Stream.STDOUT, 100, data[:3000]), (Stream.STDOUT, 3100, data[3000:]))
    messages = list(batch(chunks, limit=4096))
    assert [len(m.data) for m in messages] == [4096, 4096, 2048]
    assert [m.offset for m in messages] == [100, 4196, 8292]
    assert b"".join(m.data for m in messages) == data


def test_batch_does_not_merge_across_a_gap() -> None:
    messages = list(batch(_chunks((Stream.STDOUT, 0, b"a"), (Stream.STDOUT, 5, b"b")), 100))
    assert [(m.offset, m.data) for m in messages] == [(0, b"a"), (5, b"b")]


@given(
    stream=st.sampled_from([pb.STREAM_UNSPECIFIED, pb.STREAM_STDOUT, pb.STREAM_STDERR]),
    offset=st.integers(min_value=0, max_value=2**64 - 1),
    parts=st.lists(st.binary(max_size=300), max_size=5),
)
def test_encoded_chunks_are_the_bytes_protobuf_writes(
    stream: pb.Stream.ValueType, offset: int, parts: list[bytes]
) -> None:
    # Tail's messages skip pb.OutputChunk on the way out: a client must not be able to tell.
    data = b"".join(parts)
    expected = pb.OutputChunk(stream=stream, offset=offset, data=data).SerializeToString()
    encoded = encode_output_chunk(EncodedChunk(stream, offset, parts))
    assert encoded == expected
    parsed = pb.OutputChunk.FromString(encoded)
    assert (parsed.stream, parsed.offset, parsed.data) == (stream, offset, data)


def test_a_large_encoded_chunk_round_trips() -> None:
    parts = [bytes([i]) * (300 << 10) for i in range(4)]  # 1.2 MiB: a 3-byte length varint
    message = EncodedChunk(pb.STREAM_STDERR, 5 << 30, parts)
    parsed = pb.OutputChunk.FromString(encode_output_chunk(message))
    assert (parsed.stream, parsed.offset, parsed.data) == (
        pb.STREAM_STDERR,
        5 << 30,
        b"".join(parts),
    )


def test_the_encoder_still_takes_protobuf_messages() -> None:
    message = pb.OutputChunk(stream=pb.STREAM_STDOUT, offset=3, data=b"x")
    assert encode_output_chunk(message) == message.SerializeToString()
