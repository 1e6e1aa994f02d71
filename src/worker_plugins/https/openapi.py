"""The OpenAPI 3.1 document of the API, built from the route table and the proto itself.

Schemas come from the messages' descriptors, in their JSON mapping (lowerCamelCase names,
enums by name, 64-bit integers as strings, bytes as base64), so the document describes
exactly what :mod:`.messages` reads and writes.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from worker_plugins.grpc_transport import worker_pb2 as pb

from .errors import STATUS_BY_CODE
from .guard import CLIENT_HEADER
from .routes import JSON, ROUTES, Route

_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_UINT32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_WELL_KNOWN = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """JSON schemas of messages and enums, collected as they are referenced."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def of(self, cls: type[Message]) -> dict[str, Any]:
        """The schema (a reference) of a generated message class."""
        return self.message(cls.DESCRIPTOR)  # type: ignore[arg-type]  # upb's descriptor

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        full = descriptor.full_name
        if full in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full])
        name = descriptor.name
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: a message may refer to itself
            properties = {field.json_name: self._field(field) for field in descriptor.fields}
            self.schemas[name] = {"type": "object", "properties": properties}
        return _ref(name)

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        name = descriptor.name
        if name not in self.schemas:
            self.schemas[name] = {
                "type": "string",
                "enum": [value.name for value in descriptor.values],
            }
        return _ref(name)

    def _scalar(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"type": "number"}
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind in _UINT32:
            return {"type": "integer", "format": "uint32", "minimum": 0}
        if kind in _INT64:
            # The JSON mapping writes 64-bit integers as strings (JSON numbers lose digits).
            return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._scalar(value)}
        if field.is_repeated:
            return {"type": "array", "items": self._scalar(field)}
        return self._scalar(field)


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message", "field"],
        "properties": {
            "code": {"type": "string", "enum": sorted(STATUS_BY_CODE)},
            "message": {"type": "string"},
            "field": {"type": ["string", "null"], "description": "the offending field"},
        },
    }


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if "{job_id}" in route.path:
        parameters.append(
            {
                "name": "job_id",
                "in": "path",
                "required": True,
                "description": "a job id or a unique prefix of one the caller may read",
                "schema": {"type": "string"},
            }
        )
    for name, text in route.query.items():
        repeat = name in ("state", "label")
        schema: dict[str, Any] = {"type": "string"}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "description": text,
                "schema": {"type": "array", "items": schema} if repeat else schema,
                **({"explode": True} if repeat else {}),
            }
        )
    if "text/event-stream" in route.produces and route.path.endswith("/output"):
        parameters.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "description": "resume an event stream right after this event (as 'start')",
                "schema": {"type": "string"},
            }
        )
    if route.changes_state:
        parameters.append(
            {
                "name": CLIENT_HEADER,
                "in": "header",
                "description": "required when no Origin header names this server "
                "(cross-site request protection); any value",
                "schema": {"type": "string"},
            }
        )
    if route.response is not None:
        content = {JSON: {"schema": schemas.of(route.response)}}
    elif route.produces == (JSON,):
        content = {JSON: {"schema": {"type": "object"}}}
    else:
        content = {kind: {"schema": {"type": "string"}} for kind in route.produces}
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": parameters,
        "responses": {
            str(route.status): {"description": "success", "content": content},
            "default": {
                "description": "an error: the status by its code (see the Error schema)",
                "content": {JSON: {"schema": _ref("Error")}},
            },
        },
    }
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.method == "POST" and route.path == "/v1/jobs",
            "content": {JSON: {"schema": schemas.of(route.body)}},
        }
    return operation


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once; treat it as read-only)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    schemas.schemas["Error"] = _error_schema()
    # Every message of the proto, referenced or not (OutputChunk: the data of SSE events).
    for descriptor in pb.DESCRIPTOR.message_types_by_name.values():
        schemas.message(descriptor)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "worker",
            "version": "v1",
            "description": "The worker.v1 API over HTTPS: the proto's JSON mapping. Every "
            "call needs a client certificate from the server's CA; its Common Name is the "
            "caller. Errors: " + ", ".join(f"{c} {s}" for c, s in STATUS_BY_CODE.items()),
        },
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.schemas.items()))},
    }
