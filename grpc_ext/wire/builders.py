"""Message builders compiled once per serializer class: model instances and ``values_list`` rows into messages.

The reference path of ``ModelProtoSerializer`` turns an instance into DRF's
``.data`` (a dict of JSON-ready values), then parses that dict into a message
with ``json_format.ParseDict``, walking strings and dicts for every field of
every row.

Here the same decisions are made once, from the serializer's fields and the
message's descriptor: each readable field becomes one step "read this
attribute, convert it, pass it to the message constructor" (``MessageBuilder``).
A serializer whose output cannot be reproduced exactly that way (a custom
``to_representation``, a method field, a nested serializer, a dotted
source...) is not compiled, and keeps the reference path: a builder never
changes what a client receives. The codec (``grpc_ext.wire.codec``) is the
one user of a builder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter, is_
from typing import Any

from django.db.models import Model
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rest_framework import ISO_8601, serializers
from rest_framework import fields as drf_fields
from rest_framework.settings import api_settings

from grpc_ext.wire.bulk import same_object
from grpc_ext.wire.relations import StringPrimaryKeyRelatedField

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# DRF fields whose ``to_representation`` is a pure function of the value,
# returning the Python type json_format would accept for a scalar proto field.
PURE_SCALAR_FIELDS: tuple[type[drf_fields.Field], ...] = (
    drf_fields.CharField,
    drf_fields.UUIDField,
    drf_fields.BooleanField,
    drf_fields.IntegerField,
    drf_fields.FloatField,
    drf_fields.DecimalField,
    drf_fields.DateField,
    drf_fields.TimeField,
    drf_fields.DurationField,
    drf_fields.ChoiceField,
)

SCALAR_TYPES = {
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_DOUBLE,
    FieldDescriptor.TYPE_FLOAT,
}


class NotCompilable(Exception):
    """The serializer's output cannot be reproduced field by field; keep the reference path."""


def timestamp_kwargs(field: drf_fields.DateTimeField) -> Callable[[datetime], dict]:
    """Return a converter from a datetime to ``Timestamp`` fields, the way DRF's ISO string parses to one.

    A dict, not a ``Timestamp``: the message constructor builds the
    sub-message from it in place, which costs half of copying one in.
    """

    def convert(value: datetime) -> dict:
        if value.tzinfo is None:
            value = field.enforce_timezone(value)
        delta = value - EPOCH
        return {"seconds": delta.days * 86400 + delta.seconds, "nanos": delta.microseconds * 1000}

    return convert


def scalar_converter(field: drf_fields.Field) -> Callable:
    """Return ``field.to_representation``, or the builtin it amounts to (a cheaper call per row)."""
    method = type(field).to_representation
    if method is drf_fields.CharField.to_representation:
        return str
    if method is drf_fields.UUIDField.to_representation and getattr(field, "uuid_format", None) == "hex_verbose":
        return str
    return field.to_representation


def identity(value: Any) -> Any:
    return value


def field_converter(name: str, field: serializers.Field, proto_field: FieldDescriptor) -> tuple[str, Callable]:
    """Return ``(attribute, converter)`` for one readable serializer field, or raise ``NotCompilable``."""
    if field.source == "*" or len(field.source_attrs) != 1:
        raise NotCompilable(f"{name}: source {field.source!r} is not a plain attribute")
    if proto_field.is_repeated:
        raise NotCompilable(f"{name}: repeated proto field")
    attribute = field.source_attrs[0]
    if isinstance(field, serializers.RelatedField):
        overrides = type(field).to_representation is not StringPrimaryKeyRelatedField.to_representation
        if not isinstance(field, StringPrimaryKeyRelatedField) or overrides or not field.use_pk_only_optimization():
            raise NotCompilable(f"{name}: relation {type(field).__name__} is not a string primary key")
        model_field = getattr(field.parent, "Meta").model._meta.get_field(attribute)  # noqa: B009 (untyped Meta)
        return model_field.attname, str
    message_type = proto_field.message_type.full_name if proto_field.message_type else None
    if message_type == "google.protobuf.Timestamp" and isinstance(field, drf_fields.DateTimeField):
        output_format = getattr(field, "format", api_settings.DATETIME_FORMAT)
        if output_format is None or output_format.lower() != ISO_8601:
            raise NotCompilable(f"{name}: datetime format {output_format!r} is not ISO 8601")
        return attribute, timestamp_kwargs(field)
    if message_type == "google.protobuf.Struct" and isinstance(field, drf_fields.JSONField) and not field.binary:
        return attribute, identity
    if message_type is None and proto_field.type in SCALAR_TYPES and isinstance(field, PURE_SCALAR_FIELDS):
        if isinstance(field, drf_fields.DateTimeField):
            raise NotCompilable(f"{name}: datetime to a scalar proto field")
        return attribute, scalar_converter(field)
    raise NotCompilable(f"{name}: {type(field).__name__} to proto {message_type or proto_field.type}")


def model_column(model: type[Model] | None, attribute: str) -> str | None:
    """Return ``attribute`` if it is the attname of a concrete column of ``model`` (what ``values_list`` reads)."""
    if model is None:
        return None
    return next((field.attname for field in model._meta.concrete_fields if field.attname == attribute), None)


class MessageBuilder:
    """Build a message from a model instance: one attribute read and one conversion per field.

    When every field reads a concrete column of the model, ``columns`` names
    them, and ``build_rows`` builds messages from ``values_list(*columns)``
    tuples: the same values (Django applies the same converters), without
    creating model instances.
    """

    def __init__(
        self, proto_class: type[Message], steps: list[tuple[str, str, Callable]], columns: list[str] | None = None
    ):
        self.proto_class = proto_class
        self.field_names = [name for name, _, _ in steps]
        self.columns = columns
        self._steps = [(name, attrgetter(attribute), convert) for name, attribute, convert in steps]
        #: (proto field, converter) per column, in ``columns`` order.
        self.named_converters = [(name, convert) for name, _, convert in steps]
        self.fill = compile_fill(self.named_converters)
        self._fill_converted = compile_fill([(name, identity) for name, _ in self.named_converters])
        #: Fill functions compiled for other per-column converters (``grpc_ext.wire.rows``).
        self.fill_cache: dict[tuple, Callable] = {}

    @classmethod
    def compile(cls, serializer: serializers.Serializer, proto_class: type[Message]) -> MessageBuilder:
        """Compile the builder for ``serializer``'s readable fields; raise ``NotCompilable`` if it has none."""
        if type(serializer).to_representation is not serializers.Serializer.to_representation:
            raise NotCompilable(f"{type(serializer).__name__} overrides to_representation")
        descriptor: Any = proto_class.DESCRIPTOR  # the stubs type it as a union of implementations
        json_names = {field.json_name for field in descriptor.fields} - set(descriptor.fields_by_name)
        steps = []
        for field in serializer._readable_fields:
            name = str(field.field_name)
            proto_field = descriptor.fields_by_name.get(name)
            if proto_field is None:
                if name in json_names:
                    raise NotCompilable(f"{name}: matches a proto field by its JSON name")
                continue  # ParseDict(ignore_unknown_fields=True) drops it too.
            attribute, convert = field_converter(name, field, proto_field)
            steps.append((name, attribute, convert))
        model = getattr(getattr(serializer, "Meta", None), "model", None)
        columns = [model_column(model, attribute) for _, attribute, _ in steps]
        known = [column for column in columns if column is not None]
        return cls(proto_class, steps, known if len(known) == len(columns) else None)

    def build(self, instance: Any) -> Message:
        """Return the message for one instance; ``None`` attributes stay unset, as ParseDict leaves them."""
        kwargs = {}
        for name, get, convert in self._steps:
            value = get(instance)
            if value is not None:
                kwargs[name] = convert(value)
        return self.proto_class(**kwargs)

    def build_many(self, instances: Iterable[Any]) -> list[Message]:
        build = self.build
        return [build(instance) for instance in instances]

    def fill_columns(self, columns: list[list[Any]], make: Callable) -> list:
        """``fill`` from columns (the values of each of ``self.columns``, one list per column, rows in order).

        Each column is converted at once, and a value every row shares (a
        batch's owner, its time stamp) only once: a batch's response is built
        from the values of the instances just written.
        """
        converted = [
            convert_column(convert, values) for (_, convert), values in zip(self.named_converters, columns, strict=True)
        ]
        return self._fill_converted(zip(*converted, strict=True), make)

    def build_rows(self, rows: Iterable[tuple]) -> list[Message]:
        """Return a message per ``values_list(*self.columns)`` row (extra trailing values are ignored)."""
        return self.fill(rows, self.proto_class)


def compile_fill(named_converters: list[tuple[str, Callable]]) -> Callable[[Iterable[tuple], Callable], list]:
    """Compile ``fill(rows, make)``: ``[make(<field>=<converted row[i]>, ...) for row in rows]``.

    One expression per field, written out, so a row costs one call of
    ``make`` (the message class, or a repeated field's ``add``, which builds
    the row in place) plus its conversions; a ``None`` value leaves the field
    unset, as ``ParseDict`` does with null. Field names are proto identifiers
    from the descriptor; converters are passed in, never written into the code.
    """
    arguments = []
    for index, (name, convert) in enumerate(named_converters):
        value = f"row[{index}]"
        converted = value if convert is identity else f"convert_{index}({value})"
        arguments.append(f"{name}=None if {value} is None else {converted}")
    source = f"def fill(rows, make):\n    return [make({', '.join(arguments)}) for row in rows]\n"
    namespace = {f"convert_{index}": convert for index, (_, convert) in enumerate(named_converters)}
    exec(compile(source, "<grpc_ext.wire.builders.fill>", "exec"), namespace)
    return namespace["fill"]


def convert_column(convert: Callable, values: list[Any]) -> list[Any]:
    """Return ``convert`` of each value (``None`` stays ``None``), called once if every value is the same object."""
    if same_object(values):
        first = values[0] if values else None
        return [None if first is None else convert(first)] * len(values)
    if any(map(is_, values, repeat(None))):
        return [None if value is None else convert(value) for value in values]
    return values if convert is identity else list(map(convert, values))
