"""Request messages read into the dict DRF validates: compiled once per message type, or through JSON.

The reference reading (``message_to_dict``) is protobuf's JSON mapping
(``json_format.MessageToDict``). ``read_message`` gives the same dict without
JSON, with a ``DictReader`` compiled once per message type; the codec
(``grpc_ext.wire.codec``) uses it unless ``FAST_PATH`` is off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

from grpc_ext.wire.builders import identity

INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}

# Messages that carry free-form JSON, whose numbers protobuf holds as doubles.
JSON_MESSAGE_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}

# Integral doubles up to this magnitude are exact integers.
MAX_EXACT_INTEGER = 2**53


def message_to_dict(message: Message) -> dict:
    """Return a message's fields as a dict, unset ``optional`` fields left out.

    Fields without presence are always included, so a proto3 scalar that was
    not sent arrives as its zero value ("" or 0) and is validated as such;
    ``optional`` fields that were not set stay absent, as in a DRF request.
    Numbers inside a ``Struct`` come back as ints when they are integral, so
    ``{"n": 1}`` is stored as it was sent, not as ``{"n": 1.0}``.
    """
    data = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
    )
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.full_name in JSON_MESSAGE_TYPES and field.name in data:
            data[field.name] = integral_numbers(data[field.name])
    return data


def integral_numbers(value):
    """Return ``value`` with every integral float (exact as an int) turned into an int."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {key: integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_numbers(item) for item in value]
    return value


class DictReader:
    """Read a request message into the dict ``MessageToDict`` would return, without JSON.

    Options are those of ``message_to_dict``: proto field
    names, fields without presence always present. Scalars are copied as
    json_format prints them (64-bit integers as strings, non-finite doubles as
    "NaN"/"Infinity"), set message fields go through ``MessageToDict`` one by
    one, so DRF validates exactly the values, and gives exactly the errors, of
    the reference path. A message with repeated, map, enum or bytes fields is
    read by ``MessageToDict`` as a whole.
    """

    def __init__(self, descriptor: Descriptor):
        self.steps: list[tuple[str, bool, Callable]] | None = []
        for field in descriptor.fields:
            if field.is_repeated or field.type in (
                FieldDescriptor.TYPE_ENUM,
                FieldDescriptor.TYPE_BYTES,
            ):
                self.steps = None
                return
            convert: Callable[[Any], Any]
            if field.message_type is not None and field.message_type.full_name in JSON_MESSAGE_TYPES:
                convert = json_value
            elif field.message_type is not None:
                convert = message_value
            elif field.type in INT64_TYPES:
                convert = str
            elif field.type == FieldDescriptor.TYPE_DOUBLE:
                convert = double_value
            elif field.type == FieldDescriptor.TYPE_FLOAT:
                convert = float_value
            else:
                convert = identity
            self.steps.append((field.name, field.has_presence, convert))

    def read(self, message: Message) -> dict:
        if self.steps is None:
            return message_to_dict(message)
        data = {}
        for name, has_presence, convert in self.steps:
            if has_presence and not message.HasField(name):
                continue
            data[name] = convert(getattr(message, name))
        return data


def message_value(value: Message) -> Any:
    return json_format.MessageToDict(value, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)


def json_value(value: Message) -> Any:
    """Read a Struct/Value as ``message_to_dict`` does: integral numbers as ints."""
    return integral_numbers(message_value(value))


def double_value(value: float) -> float | str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def float_value(value: float) -> float | str:
    special = double_value(value)
    return special if isinstance(special, str) else type_checkers.ToShortestFloat(value)


#: Keyed by the message type's descriptor (a C-implemented class under upb).
_readers: dict[Any, DictReader] = {}


def read_message(message: Message) -> dict:
    """Return ``message`` as a dict, with a reader compiled once per message type."""
    descriptor: Any = message.DESCRIPTOR
    reader = _readers.get(descriptor)
    if reader is None:
        reader = _readers[descriptor] = DictReader(descriptor)
    return reader.read(message)
