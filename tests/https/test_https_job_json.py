"""The job writer (:mod:`worker_plugins.https.job_json`) against the wire form's JSON mapping.

Generated records (every field set or unset, any Unicode, integers at the limits of their
wire types, NaN and infinities where a float can hold them, facts and usage of every JSON
type, nested) are written both ways: ``job_to_dict`` gives the very JSON that ``to_dict``
of ``convert.job_to_pb`` gives (compared as text with sorted keys, so an integer written as
a float, or a string as a number, is a difference). A record setting every field shows each
field of the wire's ``Job`` and its parts is written, so one added to the proto fails here
until the writer writes it. Real records from a real engine agree too.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.descriptor import Descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mapping_strategies import STRUCT_VALUES, TEXT

from worker_core import Engine, JobSpec
from worker_core.plugin import (
    Dependency,
    DependencyKind,
    EndReason,
    IOLimit,
    Isolation,
    Job,
    JobState,
    Limits,
    Principal,
    QueueReason,
)
from worker_plugins.grpc_transport import convert
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.https.job_json import job_to_dict
from worker_plugins.https.messages import to_dict

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UINT64 = st.integers(min_value=1, max_value=2**64 - 1)
#: A user or group id, as Isolation takes one.
ID = st.integers(min_value=0, max_value=2**32 - 2)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
#: A positive finite number, as the model's limits and timeouts take them (ints too).
POSITIVE = st.floats(min_value=1e-300, allow_infinity=False) | st.integers(1, 2**40)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**53), 2**53)
#: Facts: what plugins report, of any JSON type, and tuples (written as lists).
FACT_VALUES = STRUCT_VALUES | st.tuples(STRUCT_VALUES, STRUCT_VALUES)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


IO_LIMITS = st.builds(
    IOLimit,
    device=TEXT,
    read_bps=optional(UINT64),
    write_bps=optional(UINT64),
    read_iops=optional(UINT64),
    write_iops=optional(UINT64),
)
LIMITS = st.builds(
    Limits,
    memory_max=optional(UINT64),
    memory_high=optional(UINT64),
    cpu=optional(POSITIVE),
    cpu_weight=optional(st.integers(1, 10000)),
    io_weight=optional(st.integers(1, 10000)),
    io=st.lists(IO_LIMITS, max_size=2),
    pids_max=optional(st.integers(1, 2**32 - 1)),
)
SPECS = st.builds(
    JobSpec,
    command=TEXT.filter(bool),
    args=st.lists(TEXT, max_size=3),
    env=st.dictionaries(TEXT, TEXT, max_size=3),
    cwd=TEXT,
    limits=LIMITS,
    isolation=st.builds(Isolation, uid=optional(ID), gid=optional(ID)),
    timeout=optional(POSITIVE),
    options=st.dictionaries(TEXT, TEXT, max_size=2),
    name=TEXT,
    labels=st.dictionaries(TEXT, TEXT, max_size=3),
    priority=st.integers(-1000, 1000),
    after=st.lists(st.builds(Dependency, job_id=TEXT, kind=st.sampled_from(DependencyKind))),
    hold=st.booleans(),
    begin_at=optional(ANY_FLOAT),
)
JOBS = st.builds(
    Job,
    id=TEXT,
    owner=optional(st.builds(Principal, name=TEXT)),
    spec=SPECS,
    state=st.sampled_from(JobState),
    pid=optional(INT32),
    exit_code=optional(INT32),
    signal=optional(INT32),
    end_reason=optional(st.sampled_from(EndReason)),
    message=TEXT,
    created_at=ANY_FLOAT,
    started_at=optional(ANY_FLOAT),
    ended_at=optional(ANY_FLOAT),
    queue_reason=optional(st.sampled_from(QueueReason)),
    idempotency_key=optional(TEXT),
    external_id=optional(TEXT),
    facts=st.dictionaries(TEXT, FACT_VALUES, max_size=4),
)
USAGE = optional(st.dictionaries(TEXT, st.integers(0, 2**60) | st.floats(0, 1e12), max_size=3))


def wire(job: Job, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON mapping of the record's wire form, as the handlers wrote it before."""
    message = convert.job_to_pb(job)
    if usage:
        message.usage.update(usage)
    return to_dict(message)


def text(data: dict[str, Any]) -> str:
    """JSON with sorted keys: equal texts are the same JSON (types included)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


@FUZZ
@given(JOBS, USAGE)
def test_generated_records_are_written_as_their_wire_form(job: Job, usage: Any) -> None:
    assert text(job_to_dict(job, usage)) == text(wire(job, usage))


def json_names(descriptor: Descriptor) -> set[str]:
    return {field.json_name for field in descriptor.fields}


def test_a_record_setting_every_field_writes_every_field_of_the_wire_form() -> None:
    io = IOLimit("8:0", read_bps=1, write_bps=2, read_iops=3, write_iops=4)
    limits = Limits(
        memory_max=2**40,
        memory_high=2**39,
        cpu=1.5,
        cpu_weight=100,
        io_weight=200,
        io=(io,),
        pids_max=64,
    )
    spec = JobSpec(
        "/bin/true",
        args=["a"],
        env={"K": "v"},
        cwd="/tmp",
        limits=limits,
        isolation=Isolation(uid=65534, gid=65534),
        timeout=30,
        options={"plugin.key": "value"},
        name="every",
        labels={"team": "x"},
        priority=5,
        after=[Dependency("abc", DependencyKind.ANY)],
        hold=True,
        begin_at=1.0e9,
    )
    job = Job(
        "0123",
        Principal("alice"),
        spec,
        state=JobState.ENDED,
        pid=42,
        exit_code=1,
        signal=9,
        end_reason=EndReason.STOPPED,
        message="stopped",
        created_at=1.0,
        started_at=2.0,
        ended_at=3.0,
        queue_reason=QueueReason.PRIORITY,
        idempotency_key="key",
        external_id="1234",
        facts={"oom_killed": False, "memory_peak": 4096},
    )
    written = job_to_dict(job, {"memory_bytes": 1})
    assert text(written) == text(wire(job, {"memory_bytes": 1}))
    assert set(written) == json_names(pb.Job.DESCRIPTOR)
    assert set(written["spec"]) == json_names(pb.JobSpec.DESCRIPTOR)
    assert set(written["spec"]["limits"]) == json_names(pb.Limits.DESCRIPTOR)
    assert set(written["spec"]["limits"]["io"][0]) == json_names(pb.IOLimit.DESCRIPTOR)
    assert set(written["spec"]["isolation"]) == json_names(pb.Isolation.DESCRIPTOR)
    assert set(written["spec"]["after"][0]) == json_names(pb.Dependency.DESCRIPTOR)
    # The values a client reads, spelled out once.
    assert written["spec"]["limits"]["memoryMax"] == str(2**40)
    assert written["spec"]["timeoutSeconds"] == 30.0
    assert written["factValues"] == {"oom_killed": False, "memory_peak": 4096.0}
    assert written["facts"] == {"oom_killed": "false", "memory_peak": "4096"}


def test_records_of_a_real_engine_are_written_as_their_wire_form() -> None:
    with Engine() as engine:
        ended = engine.submit(JobSpec("/bin/sh", args=["-c", "echo hi; exit 3"], name="real"))
        engine.wait(ended.id, 30)
        held = engine.submit(JobSpec("/bin/true", hold=True, labels={"a": "b"}))
        running = engine.submit(JobSpec("/bin/sleep", args=["30"], timeout=60))
        try:
            records = [engine.get(ended.id), held, running]
            for job in records:
                assert text(job_to_dict(job)) == text(wire(job))
            assert records[0].exit_code == 3 and records[0].facts  # a real ending, with facts
            assert running.pid is not None
        finally:
            engine.stop(held.id)
            engine.stop(running.id)
