"""A job record as the proto's JSON mapping, written straight from the record.

Most answers carry one job (a submit's, a stop's, each record of a status stream), and
building the ``pb.Job`` only to walk it again into a dict was most of what writing one cost
(about 28 µs of a warm core, several times that on the cold one a loop has after waiting for
a job): this writes the same dict from the :class:`Job` in about a fifth of the time.

The result equals ``to_dict(convert.job_to_pb(job))`` (the same keys and values of the same
JSON types: 64-bit integers as strings, doubles as floats, enums by name, fields with
presence left out when unset, the others at their defaults; ``fact_values`` and ``usage``
as the ``Struct`` would hold them, every number a double). Only the order of the keys may
differ, which JSON does not see. ``tests/https/test_https_job_json.py`` compares both on
generated records, so the two cannot drift apart; a field added to the proto's ``Job`` (or
to a message inside it) fails it until it is written here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker_core.plugin import Job, JobSpec, Limits
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.convert import (
    DEPENDENCY_KIND_TO_PB,
    END_REASON_TO_PB,
    QUEUE_REASON_TO_PB,
    STATE_TO_PB,
    fact_to_str,
    json_value,
)

from .fast_json import json_double

_STATE = {state: pb.JobState.Name(number) for state, number in STATE_TO_PB.items()}
_END_REASON = {reason: pb.EndReason.Name(number) for reason, number in END_REASON_TO_PB.items()}
_QUEUE_REASON = {r: pb.QueueReason.Name(number) for r, number in QUEUE_REASON_TO_PB.items()}
_KIND = {kind: pb.DependencyKind.Name(number) for kind, number in DEPENDENCY_KIND_TO_PB.items()}
_NO_END_REASON = pb.EndReason.Name(pb.END_REASON_UNSPECIFIED)
_NO_QUEUE_REASON = pb.QueueReason.Name(pb.QUEUE_REASON_UNSPECIFIED)


def job_to_dict(job: Job, usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``job`` (and what it uses now, as a ``GetResponse`` carries it) as the JSON mapping of
    its ``pb.Job``."""
    result: dict[str, Any] = {
        "id": job.id,
        "owner": job.owner_name or "",
        "spec": _spec(job.spec),
        "state": _STATE[job.state],
    }
    _optional(result, "pid", job.pid)
    _optional(result, "exitCode", job.exit_code)
    _optional(result, "signal", job.signal)
    result["endReason"] = (
        _END_REASON[job.end_reason] if job.end_reason is not None else _NO_END_REASON
    )
    result["message"] = job.message
    result["createdAt"] = _double(job.created_at)
    if job.started_at is not None:
        result["startedAt"] = _double(job.started_at)
    if job.ended_at is not None:
        result["endedAt"] = _double(job.ended_at)
    result["facts"] = {key: fact_to_str(value) for key, value in job.facts.items()}
    result["queueReason"] = (
        _QUEUE_REASON[job.queue_reason] if job.queue_reason is not None else _NO_QUEUE_REASON
    )
    result["idempotencyKey"] = job.idempotency_key or ""
    if job.facts:
        result["factValues"] = {key: _struct_value(value) for key, value in job.facts.items()}
    if usage:
        result["usage"] = {key: _struct_value(value) for key, value in usage.items()}
    result["externalId"] = job.external_id or ""
    return result


def _spec(spec: JobSpec) -> dict[str, Any]:
    result: dict[str, Any] = {
        "command": spec.command,
        "args": list(spec.args),
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "limits": _limits(spec.limits),
        "isolation": _present({"uid": spec.isolation.uid, "gid": spec.isolation.gid}),
    }
    if spec.timeout is not None:
        result["timeoutSeconds"] = _double(spec.timeout)
    result["options"] = dict(spec.options)
    result["name"] = spec.name
    result["labels"] = dict(spec.labels)
    result["priority"] = spec.priority
    result["after"] = [{"jobId": d.job_id, "kind": _KIND[d.kind]} for d in spec.after]
    result["hold"] = spec.hold
    if spec.begin_at is not None:
        result["beginAt"] = _double(spec.begin_at)
    return result


def _limits(limits: Limits) -> dict[str, Any]:
    result = _present(
        {
            "memoryMax": _uint64(limits.memory_max),
            "memoryHigh": _uint64(limits.memory_high),
            "cpu": None if limits.cpu is None else _double(limits.cpu),
            "cpuWeight": limits.cpu_weight,
            "ioWeight": limits.io_weight,
            "pidsMax": limits.pids_max,
        }
    )
    result["io"] = [
        {
            "device": io.device,
            **_present(
                {
                    "readBps": _uint64(io.read_bps),
                    "writeBps": _uint64(io.write_bps),
                    "readIops": _uint64(io.read_iops),
                    "writeIops": _uint64(io.write_iops),
                }
            ),
        }
        for io in limits.io
    ]
    return result


def _optional(result: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        result[key] = value


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """The fields with presence that are set (not None)."""
    return {key: value for key, value in values.items() if value is not None}


def _uint64(value: int | None) -> str | None:
    return None if value is None else str(value)


def _double(value: float) -> float | str:
    """A double field's value (the record may hold an int there) as json_format writes it."""
    return json_double(float(value))


def _struct_value(value: Any) -> Any:
    """What a ``google.protobuf.Value`` made by ``convert.facts_struct`` holds, as JSON: every
    number a double."""
    return json_value(value, float)
