"""Request messages as the dict DRF validates: the reference reading, through protobuf's JSON mapping."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

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
