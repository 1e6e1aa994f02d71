"""The proto's JSON mapping without json_format's per-call walk: the same output, sooner.

``json_format`` looks up every field's kind, name and converter on every call, and a submit
pays that twice: reading its ``SubmitRequest`` (10 to 35 µs, by the body's size) and
writing the ``Job`` it answers with (about 30 µs), measured alone on an idle core; in a
loaded server, with cold caches, several times that. Here the lookup is done once per
message type (a *plan*) and each call only walks the values (2 to 12 µs and 11 µs).

Exactly json_format's result or none: :func:`message_to_dict` returns what
``MessageToDict(message, always_print_fields_with_no_presence=True)`` returns (the same keys
in the same order, the same value types: 64-bit integers as strings, enums by name, bytes
in base64, NaN and infinities as strings, ``Struct`` as a plain object, unset fields with
presence left out, the others at their defaults), and :func:`dict_to_message` builds what
``ParseDict`` builds. What a plan does not cover raises :class:`Unsupported` and the caller
asks json_format, which answers (or refuses) as it always did:

- writing: a ``float`` field, an extension, an enum of a closed (proto2) type set to a number
  it lacks, a ``Struct`` holding NaN or an infinity (json_format refuses it), custom JSON enum
  names; well-known types other than ``Struct``, ``Value`` and ``ListValue`` (``Timestamp``,
  ``Duration``, wrappers, ``Any``) are written by json_format field by field;
- reading: a value of another JSON type than the field's plain one (``null``; an integer
  written as a float, or as a string with a sign, spaces or an exponent; a double as a
  string, such as ``"NaN"``; an enum by number), a key json_format refuses or treats
  specially (unknown, both spellings of one field, two fields of a oneof), a map whose keys
  are not strings, a ``bytes`` or ``float`` field, any well-known type, text that is not
  valid Unicode, nesting deeper than :data:`MAX_DEPTH`.

``tests/https/test_https_fast_json.py`` compares both ways on many generated messages and
JSON bodies, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

Convert = Callable[[Any], Any]

# The stubs give descriptors two classes (the pure-Python one and upb's), which no annotation
# here can name publicly: descriptors are Any, their constants come from FieldDescriptor.
MessageDescriptor = Any
FieldDesc = Any


class Unsupported(Exception):
    """The value is outside what the plans cover: json_format must decide."""


#: Nesting beyond this is left to json_format, which enforces its own depth limit.
MAX_DEPTH = 32

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_NULL_VALUE = "google.protobuf.NullValue"
#: Written by json_format field by field; never read here.
_OTHER_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Timestamp",
    }
)

_INT32_RANGE = {
    FieldDescriptor.CPPTYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, (1 << 32) - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, (1 << 64) - 1),
}
_INT64_TYPES = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)


def _custom_enum_names() -> bool:
    """Whether JSON enum names can differ from the proto's (the ``pb.enumvalue.json``
    option json_format honours): if so, no enum is handled here."""
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return True


def _is_map(field: FieldDesc) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def _special_kind(message: MessageDescriptor) -> str | None:
    """``"wrapper"`` or the full name of a well-known type json_format maps specially."""
    if message.file.name == "google/protobuf/wrappers.proto":
        return "wrapper"
    name: str = message.full_name
    if name in _OTHER_WELL_KNOWN or name in (_STRUCT, _VALUE, _LIST_VALUE):
        return name
    return None


# ---------------------------------------------------------------------------------------------
# writing: message -> dict
# ---------------------------------------------------------------------------------------------


class _WritePlan:
    """How to write one message type: each field's JSON name and converter, by descriptor,
    and the fields without presence in declaration order, with the value each has when unset
    (kind 0: that scalar, 1: a new list, 2: a new dict)."""

    __slots__ = ("defaults", "fields")

    def __init__(
        self,
        fields: dict[FieldDesc, tuple[str, Convert]],
        defaults: tuple[tuple[str, int, Any], ...],
    ) -> None:
        self.fields = fields
        self.defaults = defaults


_write_plans: dict[MessageDescriptor, _WritePlan | None] = {}


def message_to_dict(message: Message) -> dict[str, Any]:
    """``json_format.MessageToDict(message, always_print_fields_with_no_presence=True)``;
    :class:`Unsupported` for what the plans do not cover."""
    descriptor = message.DESCRIPTOR
    try:
        plan = _write_plans[descriptor]
    except KeyError:
        plan = _write_plans[descriptor] = _write_plan(message)
    if plan is None:
        raise Unsupported(descriptor.full_name)
    fields = plan.fields
    js: dict[str, Any] = {}
    for field, value in message.ListFields():
        try:
            name, convert = fields[field]
        except KeyError:  # an extension
            raise Unsupported(field.full_name) from None
        js[name] = convert(value)
    for name, kind, default in plan.defaults:
        if name not in js:
            js[name] = default if kind == 0 else ([] if kind == 1 else {})
    return js


def _write_plan(message: Message) -> _WritePlan | None:
    """The plan for ``message``'s type; None if json_format must write every such message."""
    descriptor = message.DESCRIPTOR
    if _special_kind(descriptor) is not None:
        return None  # a top-level well-known type: json_format writes it
    # The values of unset fields without presence, as json_format writes them.
    unset = json_format.MessageToDict(type(message)(), always_print_fields_with_no_presence=True)
    fields: dict[FieldDesc, tuple[str, Convert]] = {}
    defaults: list[tuple[str, int, Any]] = []
    try:
        for field in descriptor.fields:
            if _is_map(field):
                convert = _map_writer(field)
                kind = 2
            elif field.is_repeated:
                convert = _list_writer(_scalar_writer(field))
                kind = 1
            else:
                convert = _scalar_writer(field)
                kind = 0
            fields[field] = (field.json_name, convert)
            if not field.has_presence:
                defaults.append(
                    (field.json_name, kind, unset[field.json_name] if kind == 0 else None)
                )
    except Unsupported:
        return None
    return _WritePlan(fields, tuple(defaults))


def _list_writer(convert: Convert) -> Convert:
    def write(values: Any) -> list[Any]:
        return [convert(value) for value in values]

    return write


def _map_writer(field: FieldDesc) -> Convert:
    entry = field.message_type
    assert entry is not None
    key = entry.fields_by_name["key"]
    value = _scalar_writer(entry.fields_by_name["value"])
    if key.cpp_type == FieldDescriptor.CPPTYPE_STRING:

        def write_str_keys(values: Any) -> dict[str, Any]:
            return {k: value(values[k]) for k in values}

        return write_str_keys
    if key.cpp_type == FieldDescriptor.CPPTYPE_BOOL:

        def write_bool_keys(values: Any) -> dict[str, Any]:
            return {("true" if k else "false"): value(values[k]) for k in values}

        return write_bool_keys

    def write(values: Any) -> dict[str, Any]:
        return {str(k): value(values[k]) for k in values}

    return write


def _same(value: Any) -> Any:
    return value


def json_double(value: float) -> float | str:
    """A double as json_format writes it: NaN and the infinities by name."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


def _null(value: Any) -> None:
    return None


def _scalar_writer(field: FieldDesc) -> Convert:
    """The converter of one value of ``field`` (an element, for a repeated one)."""
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        message = field.message_type
        assert message is not None
        special = _special_kind(message)
        if special is None:
            return message_to_dict
        if special == _STRUCT:
            return _struct
        if special == _VALUE:
            return _value
        if special == _LIST_VALUE:
            return _list_value
        return _by_json_format
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        if enum.full_name == _NULL_VALUE:
            return _null
        if _custom_enum_names():
            raise Unsupported(enum.full_name)
        names: dict[int, str] = {value.number: value.name for value in enum.values}
        closed = enum.is_closed

        def write_enum(number: int) -> str | int:
            name = names.get(number)
            if name is not None:
                return name
            if closed:
                raise Unsupported(enum.full_name)  # json_format refuses it
            return number

        return write_enum
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return _bytes if field.type == FieldDescriptor.TYPE_BYTES else _same
    if cpp in _INT64_TYPES:
        return str
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return json_double
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        raise Unsupported(field.full_name)  # json_format writes its shortest repr
    return _same  # bool, 32-bit integers


def _by_json_format(message: Message) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _struct(message: Any) -> dict[str, Any]:
    fields = message.fields
    return {key: _value(fields[key]) for key in fields}


def _list_value(message: Any) -> list[Any]:
    return [_value(value) for value in message.values]


def _value(message: Any) -> Any:
    which = message.WhichOneof("kind")
    if which == "number_value":
        number: float = message.number_value
        if not math.isfinite(number):
            raise Unsupported("a Value holds NaN or an infinity")  # json_format refuses it
        return number
    if which == "string_value":
        return message.string_value
    if which == "bool_value":
        return message.bool_value
    if which == "struct_value":
        return _struct(message.struct_value)
    if which == "list_value":
        return _list_value(message.list_value)
    return None  # null_value, or unset


# ---------------------------------------------------------------------------------------------
# reading: dict -> message
# ---------------------------------------------------------------------------------------------

Parse = Callable[[Any, int], Any]


class _ReadPlan:
    """How to read one message type: for each JSON key json_format takes (the lowerCamelCase
    name and the proto's), the field's attribute, its oneof (None outside one) and a parser
    of the JSON value into what the message's constructor takes."""

    __slots__ = ("cls", "keys")

    def __init__(self, cls: type[Message], keys: dict[str, tuple[str, str | None, Parse]]):
        self.cls = cls
        self.keys = keys


_read_plans: dict[MessageDescriptor, _ReadPlan | None] = {}


def dict_to_message(data: Mapping[str, Any], cls: type[M]) -> M:
    """``json_format.ParseDict(data, cls())``; :class:`Unsupported` for whatever the plans
    do not cover, including everything ParseDict would refuse."""
    result: M = _read(data, cls.DESCRIPTOR, cls, 0)
    return result


def _read_plan(descriptor: MessageDescriptor, cls: type[Message] | None) -> _ReadPlan | None:
    try:
        return _read_plans[descriptor]
    except KeyError:
        pass
    plan: _ReadPlan | None = None
    if cls is None:
        cls = _message_class(descriptor)
    try:
        if _special_kind(descriptor) is None:
            keys: dict[str, tuple[str, str | None, Parse]] = {}
            for field in descriptor.fields:
                oneof = field.containing_oneof
                entry = (field.name, None if oneof is None else oneof.name, _field_reader(field))
                keys[field.json_name] = entry
                keys.setdefault(field.name, entry)
            plan = _ReadPlan(cls, keys)
    except Unsupported:
        plan = None
    _read_plans[descriptor] = plan
    return plan


def _message_class(descriptor: MessageDescriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _read(data: Any, descriptor: MessageDescriptor, cls: type[Message] | None, depth: int) -> Any:
    if type(data) is not dict or depth >= MAX_DEPTH:
        raise Unsupported(descriptor.full_name)
    plan = _read_plan(descriptor, cls)
    if plan is None:
        raise Unsupported(descriptor.full_name)
    keys = plan.keys
    kwargs: dict[str, Any] = {}
    oneofs: set[str] | None = None
    for key, value in data.items():
        entry = keys.get(key)
        if entry is None:
            raise Unsupported(key)  # unknown: json_format names the fields there are
        attr, oneof, parse = entry
        if attr in kwargs:
            raise Unsupported(key)  # both spellings of one field
        if oneof is not None:
            if oneofs is None:
                oneofs = set()
            elif oneof in oneofs:
                raise Unsupported(key)
            oneofs.add(oneof)
        kwargs[attr] = parse(value, depth)
    try:
        return plan.cls(**kwargs)
    except Exception as exc:  # a value the message refuses: json_format says which
        raise Unsupported(descriptor.full_name) from exc


def _field_reader(field: FieldDesc) -> Parse:
    if _is_map(field):
        entry = field.message_type
        assert entry is not None
        key = entry.fields_by_name["key"]
        if key.cpp_type != FieldDescriptor.CPPTYPE_STRING or key.type == FieldDescriptor.TYPE_BYTES:
            raise Unsupported(field.full_name)
        value = _scalar_reader(entry.fields_by_name["value"])

        def read_map(data: Any, depth: int) -> dict[str, Any]:
            if type(data) is not dict:
                raise Unsupported(field.full_name)
            return {_text(k): value(v, depth) for k, v in data.items()}

        return read_map
    scalar = _scalar_reader(field)
    if not field.is_repeated:
        return scalar

    def read_list(data: Any, depth: int) -> list[Any]:
        if type(data) is not list:
            raise Unsupported(field.full_name)
        return [scalar(item, depth) for item in data]

    return read_list


def _text(value: Any) -> str:
    if type(value) is not str:
        raise Unsupported("not a string")
    if not value.isascii():
        try:
            value.encode("utf-8")  # a lone surrogate (from a \\ud800 escape) cannot be
        except UnicodeEncodeError:
            raise Unsupported("not valid Unicode text") from None
    return value


def _scalar_reader(field: FieldDesc) -> Parse:
    """The parser of one JSON value of ``field`` (an element, for a repeated one)."""
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        message = field.message_type
        assert message is not None
        if _special_kind(message) is not None:
            raise Unsupported(message.full_name)

        def read_message(data: Any, depth: int) -> Message:
            result: Message = _read(data, message, None, depth + 1)
            return result

        return read_message
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            raise Unsupported(field.full_name)
        return lambda data, depth: _text(data)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:

        def read_bool(data: Any, depth: int) -> bool:
            if type(data) is not bool:
                raise Unsupported(field.full_name)
            return data

        return read_bool
    if cpp in _INT32_RANGE:
        low, high = _INT32_RANGE[cpp]

        def read_int(data: Any, depth: int) -> int:
            # Digits in a string are how int64s are written (json_format takes them for every
            # integer type); signs, spaces and exponents are left to json_format.
            number: int
            if type(data) is int:
                number = data
            elif type(data) is str and len(data) <= 20 and data.isascii() and data.isdigit():
                number = int(data)
            else:
                raise Unsupported(field.full_name)
            if not low <= number <= high:
                raise Unsupported(field.full_name)
            return number

        return read_int
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:

        def read_double(data: Any, depth: int) -> float:
            if type(data) is float:
                if not math.isfinite(data):
                    raise Unsupported(field.full_name)
                return data
            if type(data) is int and -(1 << 53) <= data <= 1 << 53:
                return float(data)
            raise Unsupported(field.full_name)

        return read_double
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        if enum.full_name == _NULL_VALUE or _custom_enum_names():
            raise Unsupported(enum.full_name)
        numbers: dict[str, int] = {value.name: value.number for value in enum.values}

        def read_enum(data: Any, depth: int) -> int:
            number = numbers.get(data) if type(data) is str else None
            if number is None:
                raise Unsupported(field.full_name)
            return number

        return read_enum
    raise Unsupported(field.full_name)  # float
