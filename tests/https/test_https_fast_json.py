"""The fast JSON mapping (:mod:`worker_plugins.https.fast_json`) against json_format itself.

Generated messages of every type in ``worker.v1`` (every field set, none set, any Unicode,
integers at their limits, NaN and infinities, maps and repeated fields, unknown enum numbers,
Structs nested in Structs) are written both ways: the fast path either gives the very same
JSON text (same keys, same order, same value types) or declines. Generated JSON bodies, from
canonical ones to hostile ones (wrong types, nulls, unknown keys, both spellings of a field,
lone surrogates, huge numbers), are read both ways: the fast path either builds the very same
message or declines, never accepts what json_format refuses. And the hot path really is
fast: real job records and ordinary submit bodies never fall back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from https_harness import HttpsServer, shell
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mapping_strategies import STRUCT_VALUES, TEXT

from worker_core import Engine, JobSpec
from worker_plugins.grpc_transport import convert
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.https import fast_json
from worker_plugins.https.errors import ApiError
from worker_plugins.https.messages import parse, to_dict, to_json

MESSAGES = sorted(pb.DESCRIPTOR.message_types_by_name.values(), key=lambda d: d.name)
MESSAGE_CLASSES: list[type[Message]] = [getattr(pb, d.name) for d in MESSAGES]
REQUESTS = [cls for cls in MESSAGE_CLASSES if cls.__name__.endswith("Request")]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Any JSON value json.loads can give, of any type, for the wrong-type cases.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)

F = FieldDescriptor
INT_RANGES = {
    F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    F.CPPTYPE_UINT32: (0, 2**32 - 1),
    F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT64: (0, 2**64 - 1),
}


# --- generated messages --------------------------------------------------------------------


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp in INT_RANGES:
        low, high = INT_RANGES[cpp]
        edges = sorted({low, high, 0, 1, min(2**53 + 1, high), max(-1, low)})
        return st.integers(low, high) | st.sampled_from(edges)
    if cpp == F.CPPTYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True) | st.just(-0.0)
    if cpp == F.CPPTYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if cpp == F.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == F.CPPTYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.sampled_from(numbers) | st.integers(-3, 40)  # open enums keep unknown numbers
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=12)
    return TEXT


@st.composite
def messages(draw: st.DrawFn, cls: type[Message], depth: int = 0) -> Message:
    """A ``cls`` with a random subset of its fields set (all, none, anything between)."""
    message = cls()
    every = draw(st.sampled_from(["all", "none", "some"]))
    if cls is struct_pb2.Struct:
        if every != "none":
            message.update(draw(st.dictionaries(TEXT, STRUCT_VALUES, max_size=4)))
        return message
    for field in cls.DESCRIPTOR.fields:
        if every == "none" or (every == "some" and not draw(st.booleans())):
            continue
        target = getattr(message, field.name)
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
            entries = draw(st.dictionaries(_scalar(key), _field_values(value, depth), max_size=3))
            for k, v in entries.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            items = draw(st.lists(_field_values(field, depth), max_size=3))
            for item in items:
                if isinstance(item, Message):
                    target.add().CopyFrom(item)
                else:
                    target.append(item)
        elif sub is not None:
            if depth < 3:
                target.SetInParent()
                target.MergeFrom(draw(_field_values(field, depth)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def _field_values(field: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        cls = _class_of(field.message_type)
        return messages(cls, depth + 1)
    return _scalar(field)


def _class_of(descriptor: Any) -> type[Message]:
    if descriptor.full_name == "google.protobuf.Struct":
        return struct_pb2.Struct
    cls: type[Message] = getattr(pb, descriptor.name)
    return cls


def _reference_text(message: Message) -> str | type[Exception]:
    """json_format's JSON text of ``message``, or the type of what it raised."""
    try:
        return json.dumps(
            json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        )
    except Exception as exc:
        return type(exc)


def _fast_text(message: Message) -> str | None:
    try:
        return json.dumps(fast_json.message_to_dict(message))
    except fast_json.Unsupported:
        return None


@FUZZ
@given(st.sampled_from(MESSAGE_CLASSES).flatmap(messages))
def test_writing_gives_json_formats_text_or_declines(message: Message) -> None:
    reference = _reference_text(message)
    fast = _fast_text(message)
    if fast is not None:
        assert fast == reference  # the same keys in the same order, the same value types
    # Whatever the path, the API writes what json_format writes, or fails as it does.
    if isinstance(reference, str):
        assert json.dumps(to_dict(message)) == reference
        assert json.loads(to_json(message)) == json.loads(reference)
        assert "\n" not in to_json(message)
    else:
        with pytest.raises(reference):
            to_dict(message)


@FUZZ
@given(messages(pb.Job))
def test_job_records_without_odd_numbers_never_fall_back(job: pb.Job) -> None:
    odd = [v for v in job.fact_values.fields.values() if _has_odd_number(v)]
    odd += [v for v in job.usage.fields.values() if _has_odd_number(v)]
    if not odd:
        assert _fast_text(job) == _reference_text(job)
        assert _fast_text(pb.SubmitResponse(job=job)) is not None


def _has_odd_number(value: struct_pb2.Value) -> bool:
    which = value.WhichOneof("kind")
    if which == "number_value":
        return not math.isfinite(value.number_value)
    if which == "struct_value":
        return any(_has_odd_number(v) for v in value.struct_value.fields.values())
    if which == "list_value":
        return any(_has_odd_number(v) for v in value.list_value.values)
    return False


def test_edge_values_are_written_as_json_format_writes_them() -> None:
    job = pb.Job(
        id="é\u2028\U0001f600",
        created_at=-0.0,
        started_at=math.inf,
        ended_at=math.nan,
        exit_code=0,  # set, at its default: present
        state=99,  # a number no JobState has
        spec=pb.JobSpec(
            limits=pb.Limits(memory_max=2**64 - 1, io=[pb.IOLimit(device="8:0", read_bps=0)]),
            env={"": "", "ключ": "значение"},
            priority=-(2**31),
        ),
    )
    job.fact_values.update({"a": {"b": [1, "x", None, True]}, "n": 2**60})
    fast = fast_json.message_to_dict(job)
    assert json.dumps(fast) == _reference_text(job)
    assert fast["createdAt"] == -0.0 and math.copysign(1, fast["createdAt"]) == -1
    assert fast["startedAt"] == "Infinity" and fast["endedAt"] == "NaN"
    assert fast["state"] == 99 and fast["exitCode"] == 0 and "pid" not in fast
    assert fast["spec"]["limits"] == {
        "memoryMax": str(2**64 - 1),
        "io": [{"device": "8:0", "readBps": "0"}],
    }
    # json_format refuses NaN in a Struct; so does the API, through json_format.
    job.fact_values.update({"bad": math.nan})
    with pytest.raises(fast_json.Unsupported):
        fast_json.message_to_dict(job)
    with pytest.raises(json_format.SerializeToJsonError):
        to_dict(job)


def test_a_real_record_takes_the_fast_path() -> None:
    with Engine([]) as engine:
        spec = JobSpec("/bin/sh", ("-c", "exit 3"), env={"LANG": "C.UTF-8"}, labels={"k": "v"})
        job = engine.wait(engine.submit(spec).id, 30)
    message = pb.SubmitResponse(job=convert.job_to_pb(job))
    assert _fast_text(message) == _reference_text(message)
    assert fast_json.message_to_dict(message)["job"]["exitCode"] == 3


# --- generated JSON bodies -----------------------------------------------------------------


@st.composite
def bodies(draw: st.DrawFn, cls: type[Message]) -> Any:
    """A JSON object for ``cls``: json_format's own output of a generated message (camelCase
    or snake_case), then perhaps spoilt here and there."""
    message = draw(messages(cls))
    try:
        data = json_format.MessageToDict(message, preserving_proto_field_name=draw(st.booleans()))
    except json_format.SerializeToJsonError:
        data = {}
    return draw(_spoilt(data, cls.DESCRIPTOR, 0))


@st.composite
def _spoilt(draw: st.DrawFn, data: Any, descriptor: Any, depth: int) -> Any:
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    for key, value in data.items():
        roll = draw(st.integers(0, 19))
        field = fields.get(key)
        if roll == 0:
            continue  # dropped
        if roll == 1:
            out[key] = draw(JSON_VALUES)  # any value, of any type
        elif roll == 2 and field is not None:
            out[field.name] = value  # the other spelling too
            out[field.json_name] = value
        elif roll == 3 and field is not None and field.type in (F.TYPE_INT64, F.TYPE_UINT64):
            out[key] = int(value) if isinstance(value, str) else value  # a number, not text
        elif roll == 4:
            out[key] = draw(
                st.sampled_from(["\ud800", "NaN", "-Infinity", " 5", "1e3", "0x10", ""])
            )
        elif roll == 5 and field is not None and field.message_type is not None:
            out[key] = {} if not field.is_repeated else []
        elif field is not None and field.message_type is not None and not field.is_repeated:
            sub = field.message_type
            out[key] = value if sub.GetOptions().map_entry else draw(_spoilt(value, sub, depth + 1))
        else:
            out[key] = value
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.text(max_size=8))] = draw(JSON_VALUES)  # perhaps an unknown key
    return out


def _reference_message(data: Any, cls: type[Message]) -> Message | None:
    try:
        return json_format.ParseDict(data, cls())
    except Exception:
        return None


@FUZZ
@given(st.sampled_from(REQUESTS).flatmap(lambda cls: st.tuples(st.just(cls), bodies(cls))))
def test_reading_builds_json_formats_message_or_declines(case: tuple[type[Message], Any]) -> None:
    cls, data = case
    reference = _reference_message(data, cls)
    try:
        fast = fast_json.dict_to_message(data, cls)
    except fast_json.Unsupported:
        fast = None
    if fast is not None:
        assert reference is not None, f"the fast path took what json_format refuses: {data}"
        assert fast == reference
        assert fast.SerializeToString(deterministic=True) == reference.SerializeToString(
            deterministic=True
        )
    # Whatever the path, a body reads as json_format reads it, or is refused.
    body = json.dumps(data).encode()
    if reference is None:
        with pytest.raises(ApiError) as refused:
            parse(body, cls)
        assert refused.value.code == "INVALID_ARGUMENT"
    else:
        assert parse(body, cls) == reference


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"spec": {"command": "/bin/true"}, "waitSeconds": 20},
        {"spec": {"command": "/bin/true"}, "wait_seconds": 0, "idempotency_key": "k-1"},
        {
            "spec": {
                "command": "/bin/sh",
                "args": ["-c", "echo ü"],
                "env": {"LANG": "C.UTF-8"},
                "cwd": "/tmp",
                "limits": {
                    "memoryMax": "67108864",
                    "memoryHigh": 1 << 25,
                    "cpu": 0.5,
                    "pidsMax": 64,
                    "io": [{"device": "8:0", "readBps": "1048576"}],
                },
                "isolation": {"uid": 65534, "gid": 65534},
                "timeoutSeconds": 30,
                "options": {"x.y": "z"},
                "name": "n",
                "labels": {"team": "a"},
                "priority": -5,
                "after": [{"jobId": "ab12", "kind": "DEPENDENCY_KIND_ANY"}],
                "hold": True,
                "beginAt": 1.5e9,
            },
            "idempotencyKey": "retry-7",
        },
    ],
)
def test_ordinary_submit_bodies_never_fall_back(data: dict[str, Any]) -> None:
    fast = fast_json.dict_to_message(data, pb.SubmitRequest)
    assert fast == json_format.ParseDict(data, pb.SubmitRequest())
    assert fast.HasField("spec") == ("spec" in data)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"waitSeconds": ' + b"9" * 400 + b"}", "not a valid SubmitRequest"),
        (b'{"waitSeconds": ' + b"9" * 5000 + b"}", "the body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
        (b'{"spec": {"command": "\\ud800"}}', "not a valid SubmitRequest"),
        (b'{"spec": {"limits": {"memoryMax": "' + b"9" * 30 + b'"}}}', "not a valid"),
        (b'{"spec": {"command": null}, "idempotency_key": "a", "idempotencyKey": "b"}', None),
        (b'{"wait_seconds": 1, "waitSeconds": 2}', "multiple"),
    ],
)
def test_odd_bodies_are_read_or_refused_as_json_format_does(body: bytes, says: str | None) -> None:
    if says is None:  # json_format takes it: null is the default, the last spelling wins
        assert parse(body, pb.SubmitRequest) == pb.SubmitRequest(
            spec=pb.JobSpec(), idempotency_key="b"
        )
        return
    with pytest.raises(ApiError) as refused:
        parse(body, pb.SubmitRequest)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert says in refused.value.message


# --- over the wire -------------------------------------------------------------------------


def test_the_wire_carries_json_formats_mapping_of_the_record(server: HttpsServer) -> None:
    """A record as the HTTPS transport wrote it is the JSON json_format makes of the same
    record read over gRPC."""
    job = server.submit("alice", shell("echo hi; exit 2", labels={"k": "ü"}), waitSeconds=20)
    reply = server.call("alice", "GET", f"/v1/jobs/{job['id']}")
    assert reply.status == 200
    record = server.stub("alice").Get(pb.GetRequest(job_id=job["id"]), timeout=30).job
    expected = json_format.MessageToDict(
        pb.GetResponse(job=record), always_print_fields_with_no_presence=True
    )
    received = reply.json()
    received["job"].pop("usage", None)  # usage is sampled at each call; an ended job has none
    expected["job"].pop("usage", None)
    assert received == expected
    assert received["job"]["exitCode"] == 2
