"""``ModelProtoSerializer`` repaired for protobuf 6+ and current DRF.

Replaces, in the framework's class:
- ``message_to_data``: it passed ``including_default_value_fields``, which
  protobuf removed, so every Create and Update failed;
- ``many_init``: it forwarded ``max_length``/``min_length`` to the child
  serializer, a TypeError on current DRF;
- ``Meta.proto_class`` may be a dotted path, resolved on first use, so that a
  serializer imports before its stubs have been generated, or omitted
  (``protos.<app_label>_pb2.<Model>``);
- ``Meta.create_function``/``Meta.update_function`` name the domain services
  that write the model; they take the validated fields as keyword arguments,
  so a field added to the model and to ``fields`` reaches them unchanged.
Related objects are written as their key's string, the way the generated
protos type them.

Messages are encoded and requests decoded by the class's codec
(``get_codec``, ``grpc_ext.wire.codec``): ``.message`` is built straight from the
instance by converters compiled once per class, requests are read into a dict
without JSON, and ``get_fields()`` is built once per class and cloned
(``FieldPrototype``). The
reference path (DRF ``.data`` + ``json_format``) stays available as
``reference_message`` and is what a serializer that cannot be compiled uses;
``GRPC_FRAMEWORK["FAST_PATH"] = False`` turns the fast path off everywhere.
"""

from __future__ import annotations

import copy
import decimal
import types
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.functional import Promise, cached_property
from django.utils.module_loading import import_string
from django_grpc_framework import proto_serializers
from google.protobuf import json_format
from google.protobuf.message import Message
from rest_framework import exceptions as drf_exceptions
from rest_framework import fields as drf_fields
from rest_framework.serializers import LIST_SERIALIZER_KWARGS, LIST_SERIALIZER_KWARGS_REMOVE, BaseSerializer
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from grpc_ext.exceptions import InvalidArgument
from grpc_ext.models import ETAG_FIELD, has_etag
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.codec import MessageCodec
from grpc_ext.wire.item_validation import compile_item_validation
from grpc_ext.wire.relations import StringPrimaryKeyRelatedField


def unreadable_fields(message: Message) -> list[str]:
    """Name the set fields of ``message`` that JSON cannot hold (an out-of-range Timestamp, a bad FieldMask path)."""
    names = []
    for field, value in message.ListFields():
        if field.message_type is not None and not field.is_repeated:
            try:
                json_format.MessageToJson(value)
            except ValueError:
                names.append(field.name)
    return names


def contains_null_character(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_null_character(key) or contains_null_character(item) for key, item in value.items())
    if isinstance(value, list):
        return any(contains_null_character(item) for item in value)
    return False


def prohibit_null_characters_in_json(value) -> None:
    """Refuse a NUL in a JSON key or string: PostgreSQL's jsonb cannot store one."""
    if contains_null_character(value):
        raise drf_exceptions.ValidationError("Null characters are not allowed.", code="null_characters_not_allowed")


#: DRF fields that cannot produce a value a model field counts as blank ('', [], {}, ...).
NEVER_BLANK_FIELDS = (
    drf_fields.IntegerField,
    drf_fields.FloatField,
    drf_fields.DecimalField,
    drf_fields.BooleanField,
    drf_fields.DateTimeField,
    drf_fields.DateField,
    drf_fields.UUIDField,
)


def model_field_of(model, source: str):
    """Return the concrete, non-relation model field named ``source``, or ``None``."""
    try:
        field = model._meta.get_field(source)
    except FieldDoesNotExist:
        return None
    return field if getattr(field, "concrete", False) and not field.is_relation else None


def runs_validator(field: drf_fields.Field, validator) -> bool:
    """Tell whether ``field`` runs ``validator``, or one of its type with the same limit (DRF's own length check)."""
    if validator in field.validators:
        return True
    limit = getattr(validator, "limit_value", None)
    return limit is not None and any(
        type(own) is type(validator) and getattr(own, "limit_value", None) == limit for own in field.validators
    )


def valid_default(field: drf_fields.Field, model_field) -> bool:
    """Tell whether ``field`` has a fixed default that ``model_field.clean`` accepts."""
    default = field.default
    if default is drf_fields.empty or callable(default):
        return False
    try:
        model_field.clean(default, None)
    except DjangoValidationError:
        return False
    return True


def checks_as_model_field(field: drf_fields.Field, model_field) -> bool:
    """Tell whether a valid value of ``field`` always passes ``model_field.clean`` (see ``model_checked_fields``)."""
    if model_field is None or not all(runs_validator(field, validator) for validator in model_field.validators):
        return False
    if not field.required and not valid_default(field, model_field):
        return False  # DRF does not validate a default, and an omitted field takes the model's
    if not model_field.null and field.allow_null:
        return False
    if not model_field.blank:
        never_blank = isinstance(field, NEVER_BLANK_FIELDS) or (
            isinstance(field, drf_fields.CharField) and not field.allow_blank
        )
        if not never_blank:
            return False
    if model_field.choices:
        model_choices = {str(key) for key, _ in model_field.flatchoices}
        if not isinstance(field, drf_fields.ChoiceField) or not set(map(str, field.choices)) <= model_choices:
            return False
    return True


def fast_path_enabled() -> bool:
    return grpc_ext_settings.FAST_PATH


#: Attribute values a field's clone shares with its prototype: immutable, or a class or function (a default).
SHARED_VALUES = (
    type(None),
    bool,
    int,
    float,
    str,
    bytes,
    decimal.Decimal,
    Promise,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
)
#: DRF's record of a field's constructor arguments (for ``repr`` and ``deepcopy``): read, never changed.
CONSTRUCTOR_RECORD = frozenset({"_args", "_kwargs"})
#: Containers a clone copies one level deep.
CONTAINERS = (dict, list, set)


def is_plain_container(value) -> bool:
    """Tell whether ``value`` is a dict, list or set of immutable values (error messages, style, choices)."""
    if type(value) not in CONTAINERS:
        return False
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    return all(isinstance(item, SHARED_VALUES) for item in items)


def is_validator_list(name: str, value) -> bool:
    """Tell whether ``value`` is a field's own list of validators, which DRF shares between copies."""
    return (
        name == "_validators"
        and type(value) is list
        and not any(isinstance(item, drf_fields.Field | BaseSerializer) for item in value)
    )


class FieldPrototype:
    """A serializer field built once per class, from which each serializer gets its own field (``clone``).

    DRF deep-copies declared fields by calling ``__init__`` again with the
    original arguments, a large part of a Create's CPU for a handful of
    fields. A clone is the prototype's state in a new object of its class:
    ``bind()`` then sets ``parent`` and ``field_name`` on the clone only, and
    containers (error messages, style, the validator list) are copied one level,
    so a serializer that changes its field's ``required``, ``validators`` or
    ``error_messages`` changes no other. Immutable values and validators are
    shared, as DRF's own copy shares the validators it was given. A field whose
    state holds anything else (a nested serializer, a ``ListField``'s child, a
    ``ManyRelatedField``'s child relation, a queryset, a default object) is
    deep-copied as DRF copies it.
    """

    def __init__(self, field: drf_fields.Field):
        self.field = field
        self.containers: tuple[str, ...] | None = self.plan(field)
        self.state = dict(vars(field))

    @staticmethod
    def plan(field: drf_fields.Field) -> tuple[str, ...] | None:
        """Return the attributes a clone copies (its containers), or ``None`` if the field is deep-copied."""
        if isinstance(field, BaseSerializer) or any("__slots__" in vars(cls) for cls in type(field).__mro__[:-1]):
            return None
        containers = []
        for name, value in vars(field).items():
            if name in CONSTRUCTOR_RECORD or isinstance(value, SHARED_VALUES):
                continue
            if not (is_plain_container(value) or is_validator_list(name, value)):
                return None
            containers.append(name)
        return tuple(containers)

    def clone(self) -> Any:
        """Return a new field equal to the prototype, unbound, sharing only immutable state with it."""
        if self.containers is None:
            return copy.deepcopy(self.field)
        field = object.__new__(type(self.field))
        state = self.state.copy()
        for name in self.containers:
            state[name] = state[name].copy()
        field.__dict__ = state
        return field


def skip_surrogate_checks(serializer) -> None:
    """Drop DRF's lone-surrogate check from the writable fields of a serializer that reads a protobuf request.

    A proto ``string`` is UTF-8 on the wire and protobuf refuses to parse one
    that is not, so a decoded request cannot hold a surrogate; the check
    scans every character of every string (a tenth of a batch's time). The
    fields are the serializer's own clones: the REST API, whose JSON can hold
    a lone surrogate, keeps the check.
    """
    for field in getattr(serializer, "fields", {}).values():
        if field.read_only:
            continue  # never validated
        validators = field.validators
        if any(isinstance(validator, ProhibitSurrogateCharactersValidator) for validator in validators):
            field.validators = [v for v in validators if not isinstance(v, ProhibitSurrogateCharactersValidator)]


class ListProtoSerializer(proto_serializers.ListProtoSerializer):
    def run_child_validation(self, data):
        """Validate one item: a valid one by the child's compiled check, any other by DRF (its errors).

        The check is compiled once per list serializer (once per batch), after
        its child's fields are final (``skip_surrogate_checks``), and only for
        a child that validates as DRF's ``Serializer`` does
        (``grpc_ext.wire.item_validation``).
        """
        accept = self._accept_item
        if accept is not None:
            validated = accept(data)
            if validated is not None:
                return validated
        return super().run_child_validation(data)

    @cached_property
    def _accept_item(self):
        if not fast_path_enabled() or type(self).run_child_validation is not ListProtoSerializer.run_child_validation:
            return None
        return compile_item_validation(self.child, (ModelProtoSerializer.run_validators,))

    @property
    def message(self) -> list[Message]:
        """Return the list of messages, encoded by the child's codec."""
        if not hasattr(self, "_message"):
            self._message = self.child.get_codec().encode_many(self)
        return self._message


class ModelProtoSerializer(proto_serializers.ModelProtoSerializer):
    serializer_related_field = StringPrimaryKeyRelatedField
    #: Build ``get_fields()`` once per class (see ``get_fields``).
    cache_fields = True

    @classmethod
    def proto_class_path(cls) -> str:
        """Return the dotted path of the message class, without importing it.

        ``Meta.proto_class`` may be omitted: it then means
        ``<PROTO_PACKAGE>.<app_label>_pb2.<Model>``, the message generateproto writes.
        """
        proto_class = getattr(cls.Meta, "proto_class", None)
        if proto_class is None:
            model = cls.Meta.model
            return f"{grpc_ext_settings.PROTO_PACKAGE}.{model._meta.app_label}_pb2.{model.__name__}"
        if isinstance(proto_class, str):
            return proto_class
        return f"{proto_class.__module__}.{proto_class.__qualname__}"

    @classmethod
    def get_proto_class(cls) -> type[Message]:
        """Return the message class of ``Meta.proto_class`` (see ``proto_class_path``), imported on first use."""
        proto_class = getattr(cls.Meta, "proto_class", None)
        if proto_class is None or isinstance(proto_class, str):
            proto_class = cls.Meta.proto_class = import_string(cls.proto_class_path())
        return proto_class

    def create(self, validated_data):
        """Create through ``Meta.create_function(**validated_data)`` (a domain service) when declared."""
        create_function = getattr(self.Meta, "create_function", None)
        if create_function is None:
            return super().create(validated_data)
        return create_function(**validated_data)

    def update(self, instance, validated_data):
        """Update through ``Meta.update_function(instance, **validated_data)`` when declared."""
        update_function = getattr(self.Meta, "update_function", None)
        if update_function is None:
            return super().update(instance, validated_data)
        return update_function(instance, **validated_data)

    @classmethod
    def service_function(cls, action: str):
        """Return ``Meta.<action>_function`` (``"create"``, ``"update"``) if ``save()`` only calls it, else ``None``.

        A ``create``, ``update`` or ``save`` overridden here may write more
        than the domain function (``grpc_ext.services.mixins.write_transaction``).
        """
        function = getattr(cls.Meta, f"{action}_function", None)
        if function is None or getattr(cls, action) is not getattr(ModelProtoSerializer, action):
            return None
        return function if cls.save is BaseSerializer.save else None

    def message_to_data(self, message: Message) -> dict:
        """Read a request into DRF's input; INVALID_ARGUMENT for a value JSON cannot hold (a year-10000 Timestamp)."""
        try:
            return self.get_codec().decode(message)
        except ValueError:
            fields = unreadable_fields(message)
            raise InvalidArgument(
                f"{', '.join(fields) or 'The request'}: not a valid value.",
                field_errors={field: ["Not a valid value (out of range or malformed)."] for field in fields},
            ) from None

    def build_standard_field(self, field_name, model_field):
        """Build DRF's field; a JSON field also refuses null characters, as a CharField does."""
        field_class, field_kwargs = super().build_standard_field(field_name, model_field)
        if issubclass(field_class, drf_fields.JSONField):
            field_kwargs["validators"] = [*field_kwargs.get("validators", []), prohibit_null_characters_in_json]
        return field_class, field_kwargs

    @property
    def message(self) -> Message:
        """Return the message for ``.data``, encoded by the class's codec."""
        if not hasattr(self, "_message"):
            self._message = self.get_codec().encode(self)
        return self._message

    @property
    def reference_message(self) -> Message:
        """Return the message the reference path builds: DRF ``.data`` parsed by ``json_format``."""
        return self.data_to_message(self.data)

    @classmethod
    def get_codec(cls) -> MessageCodec:
        """Return the class's codec, compiled on first use (one per ``FAST_PATH`` setting)."""
        key = "_fast_codec" if fast_path_enabled() else "_reference_codec"
        codec = cls.__dict__.get(key)
        if codec is None:
            codec = MessageCodec.compile(cls)
            setattr(cls, key, codec)
        return codec

    def get_fields(self):
        """Return the fields, built once per class; each serializer gets its own clones (``FieldPrototype``).

        ``ModelSerializer.get_fields`` inspects the model on every call, which
        costs more than the RPC's query. Set ``cache_fields = False`` on a
        serializer whose fields depend on the instance or the context.
        """
        cls = type(self)
        if not cls.cache_fields or not fast_path_enabled():
            return super().get_fields()
        prototypes = cls.__dict__.get("_prototype_fields")
        if prototypes is None:
            prototypes = {name: FieldPrototype(field) for name, field in super().get_fields().items()}
            cls._prototype_fields = prototypes
        return {name: prototype.clone() for name, prototype in prototypes.items()}

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

    def get_field_names(self, declared_fields, info):
        """Add the read-only ``etag`` of an ``ETagModel`` (AIP-154), so every such resource carries it."""
        names = super().get_field_names(declared_fields, info)
        if has_etag(self.Meta.model) and ETAG_FIELD not in names:
            names = [*names, ETAG_FIELD]
        return names

    def get_extra_kwargs(self):
        kwargs = super().get_extra_kwargs()
        if has_etag(self.Meta.model):
            kwargs[ETAG_FIELD] = {**kwargs.get(ETAG_FIELD, {}), "read_only": True}
        return kwargs

    @cached_property
    def _writable_fields(self) -> list[drf_fields.Field]:
        """List the writable fields once per serializer (DRF walks ``fields`` for each item a batch validates).

        ``fields`` is itself built once per serializer, so the list stays true.
        """
        return [field for field in self.fields.values() if not field.read_only]

    def get_validators(self):
        """Return the serializer's validators; the default ones (unique together, unique for date) built once per class.

        DRF derives them from the model and the fields on every serializer,
        which costs more than checking them. They are the same for every
        serializer of a class whose fields are built once per class
        (``cache_fields``, ``get_fields`` not overridden), and, like the
        validators a ``Meta.validators`` declares, they hold no state of a call.
        """
        cls = type(self)
        if (
            getattr(self.Meta, "validators", None) is not None
            or not cls.cache_fields
            or not fast_path_enabled()
            or cls.get_fields is not ModelProtoSerializer.get_fields
        ):
            return super().get_validators()
        validators = cls.__dict__.get("_default_validators")
        if validators is None:
            validators = cls._default_validators = tuple(super().get_validators())
        return list(validators)

    def run_validators(self, value) -> None:
        """Run the serializer's validators, if it has any (a unique-together rule, a declared one).

        DRF first gathers every read-only field's default to pass them; with
        no validator that is work for nothing, repeated for each item of a batch.
        """
        if self.validators:
            super().run_validators(value)

    def model_checked_fields(self) -> frozenset[str]:
        """Name the model fields whose writable serializer field checks what the model field's ``clean`` checks.

        These are fields ModelSerializer built from a model field and nothing
        loosened: the model field's validators (a max or min length as DRF's
        own), ``blank`` as ``allow_blank``, ``null`` as ``allow_null``, its
        choices. A bulk write may skip re-checking them (``full_clean(exclude=...)``);
        a declared field or any other model field is checked again.
        """
        model = self.Meta.model
        return frozenset(
            field.source  # the model field's name, the key of validated data
            for name, field in self.fields.items()
            if not field.read_only
            and name not in self._declared_fields
            and checks_as_model_field(field, model_field_of(model, field.source))
        )

    def writable_field_names(self) -> list[str]:
        """Name the fields a client may write (the request messages carry exactly these)."""
        return [name for name, field in self.fields.items() if not field.read_only]
