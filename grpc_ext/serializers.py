"""``ModelProtoSerializer`` repaired for protobuf 6+ and current DRF.

Replaces, in the framework's class:
- ``message_to_data``: it passed ``including_default_value_fields``, which
  protobuf removed, so every Create and Update failed;
- ``many_init``: it forwarded ``max_length``/``min_length`` to the child
  serializer, a TypeError on current DRF;
- ``Meta.proto_class`` may be a dotted path, resolved on first use, so that a
  serializer imports before its stubs have been generated.
Related objects are written as their key's string, the way the generated
protos type them.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.module_loading import import_string
from django_grpc_framework import proto_serializers
from google.protobuf import json_format
from google.protobuf.message import Message
from rest_framework import relations
from rest_framework.serializers import LIST_SERIALIZER_KWARGS, LIST_SERIALIZER_KWARGS_REMOVE


class StringPrimaryKeyRelatedField(relations.PrimaryKeyRelatedField):
    """A related object as the string of its key (a UUID is a proto ``string``)."""

    def to_representation(self, value) -> str:
        return str(value.pk)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except DjangoValidationError:
            self.fail("does_not_exist", pk_value=data)


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


class ListProtoSerializer(proto_serializers.ListProtoSerializer):
    pass


class ModelProtoSerializer(proto_serializers.ModelProtoSerializer):
    serializer_related_field = StringPrimaryKeyRelatedField

    @classmethod
    def get_proto_class(cls) -> type[Message]:
        """Return ``Meta.proto_class``, importing it first if it is a dotted path."""
        proto_class = cls.Meta.proto_class
        if isinstance(proto_class, str):
            proto_class = cls.Meta.proto_class = import_string(proto_class)
        return proto_class

    def message_to_data(self, message: Message) -> dict:
        return message_to_dict(message)

    def data_to_message(self, data) -> Message:
        return json_format.ParseDict(data, self.get_proto_class()(), ignore_unknown_fields=True)

    @classmethod
    def many_init(cls, *args, **kwargs):
        list_kwargs = {key: value for key, value in kwargs.items() if key in LIST_SERIALIZER_KWARGS}
        child_kwargs = {key: value for key, value in kwargs.items() if key not in LIST_SERIALIZER_KWARGS_REMOVE}
        list_kwargs["child"] = cls(*args, **child_kwargs)
        meta = getattr(cls, "Meta", None)
        list_serializer_class = getattr(meta, "list_serializer_class", ListProtoSerializer)
        return list_serializer_class(*args, **list_kwargs)

    def writable_field_names(self) -> list[str]:
        """Name the fields a client may write (the request messages carry exactly these)."""
        return [name for name, field in self.fields.items() if not field.read_only]


