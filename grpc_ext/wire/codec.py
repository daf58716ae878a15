"""The one seam between a serializer and the wire: instances and rows become messages, requests become data.

A ``MessageCodec`` is built once per serializer class (``ModelProtoSerializer.get_codec``)
and is the one interface every action encodes and decodes through:

================================  ====================================================  ==========================
method                            does                                                  called by
================================  ====================================================  ==========================
``encode(serializer)``            the message of a serializer (its instance, or data)   ``serializer.message``:
                                                                                        Create, Update,
                                                                                        PartialUpdate
``encode_many(serializer)``       the messages of a ``many=True`` serializer            ``.message`` of a list
``encode_instance(instance)``     one instance's message, no serializer built           Retrieve
``encode_into(repeated, objs)``   instances' messages, each built in place in a         BatchCreate
                                  response's repeated field
``fetch(queryset)``               ``values_list`` rows and the function that fills      List and Stream pages
                                  messages from them in place                           (``KeysetPagination``)
``decode(message)``               a request as the dict DRF validates                   ``message_to_data``:
                                                                                        every write
================================  ====================================================  ==========================

``encodes_instances`` and ``columns`` say what the codec can do without a
serializer: when it has no compiled builder, or a field is no column, the
action builds a serializer (``get_serializer``) and asks ``encode`` or
``encode_many``, so an overridden ``get_serializer`` is honoured by every
action. Its parts: ``builders.MessageBuilder`` (compiled when the serializer
can be, else the reference path of DRF ``.data`` + ``json_format``),
``rows.RawRows`` (rows as the driver gives them, converted once, when the
backend's converters are known; plain ``values_list`` otherwise: the one
fallback) and ``readers`` (requests to data). Nothing outside this module
uses the parts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from django.db.models import QuerySet
from google.protobuf.message import Message

from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.builders import MessageBuilder, NotCompilable
from grpc_ext.wire.readers import message_to_dict, read_message
from grpc_ext.wire.rows import RawRows

logger = logging.getLogger(__name__)


@dataclass
class FetchedRows:
    """Rows of a ``values_list(*codec.columns, ...)`` query and how to turn them into messages."""

    #: The rows, as the driver or ``values_list`` gives them.
    rows: Iterator[tuple]
    #: ``fill(rows, make)``: ``[make(<field>=<value>, ...) for row in rows]`` (``make``: a message class or ``add``).
    fill: Callable[[Iterable[tuple], Callable], list]
    #: ``to_python(row)``: the row as ``values_list`` would return it (for page tokens).
    to_python: Callable[[tuple], list]


class MessageCodec:
    """Encode instances and rows of one serializer class into messages; decode requests into data."""

    def __init__(self, serializer_class: Any, builder: MessageBuilder | None):
        self.serializer_class = serializer_class
        #: The compiled builder, or ``None`` (the reference path): a part, used by the methods below only.
        self.builder = builder
        #: Whether ``encode_instance`` and ``encode_into`` can be called (no serializer needed).
        self.encodes_instances = builder is not None

    @classmethod
    def compile(cls, serializer_class: Any) -> MessageCodec:
        """Compile the codec of ``serializer_class`` (the reference path if it cannot be compiled)."""
        builder = None
        if grpc_ext_settings.FAST_PATH and getattr(serializer_class, "cache_fields", False):
            try:
                builder = MessageBuilder.compile(serializer_class(), serializer_class.get_proto_class())
            except NotCompilable as exc:
                logger.info("%s keeps the reference path: %s", serializer_class.__qualname__, exc)
        return cls(serializer_class, builder)

    @property
    def columns(self) -> list[str] | None:
        """The ``values_list`` columns that make a message, or ``None`` if messages need model instances."""
        return self.builder.columns if self.builder is not None else None

    # Encoding ---------------------------------------------------------------------------------

    def encode(self, serializer) -> Message:
        """Return the message of a serializer bound to one instance (or holding validated data)."""
        if self.builder is not None and serializes_instance(serializer):
            return self.builder.build(serializer.instance)
        return serializer.data_to_message(serializer.data)

    def encode_many(self, serializer) -> list[Message]:
        """Return the messages of a ``many=True`` serializer."""
        if self.builder is not None and serializes_instance(serializer):
            instances = serializer.instance
            return self.builder.build_many(instances.all() if hasattr(instances, "all") else instances)
        return serializer.data_to_message(serializer.data)

    def encode_instance(self, instance: Any) -> Message:
        """Return the message of one instance, as ``serializer.message`` would; only if ``encodes_instances``."""
        return self.builder.build(instance)  # type: ignore[union-attr]  # encodes_instances: it is set

    def encode_into(self, repeated: Any, instances: list[Any]) -> None:
        """Append the messages of ``instances`` to a response's ``repeated`` field; only if ``encodes_instances``.

        With ``columns``, each message is built in place in the response, from
        the instances' column values (a value the rows share converted once).
        """
        builder = self.builder
        if builder is None:
            raise ValueError(f"{self.serializer_class.__qualname__} needs a serializer: its codec is not compiled")
        if builder.columns is not None and instances:
            builder.fill_columns([list(map(attrgetter(column), instances)) for column in builder.columns], repeated.add)
        else:
            repeated.extend(builder.build(instance) for instance in instances)

    def fetch(self, queryset: QuerySet, *, extra_columns: Iterable[str] = ()) -> FetchedRows:
        """Run ``queryset.values_list(*self.columns, *extra_columns)``; return its rows and how to fill messages.

        The backend's converters and the message's are fused into one function
        per column when they are known (``RawRows``); otherwise rows come from
        ``values_list`` as usual and the builder's own converters apply.
        Extra columns (a page's ordering) follow the message's in each row.
        """
        if self.builder is None or self.builder.columns is None:
            raise ValueError(f"{self.serializer_class.__qualname__} needs model instances: its codec has no columns")
        queryset = queryset.values_list(*self.builder.columns, *extra_columns)
        raw = RawRows(self.builder, queryset)
        if raw.fill is not None:
            return FetchedRows(raw.rows(), raw.fill, raw.python_row)
        return FetchedRows(iter(queryset), self.builder.fill, list)

    # Decoding ---------------------------------------------------------------------------------

    def decode(self, message: Message) -> dict[str, Any]:
        """Return a request message as the dict of its fields that DRF validates."""
        if grpc_ext_settings.FAST_PATH:
            return read_message(message)
        return message_to_dict(message)


def serializes_instance(serializer) -> bool:
    """Tell whether ``serializer.data`` is the representation of its instance (DRF's first case).

    Otherwise (validated data without an instance, errors, or a missing
    ``is_valid()`` call) ``.data`` decides, assertions included.
    """
    unvalidated = hasattr(serializer, "initial_data") and not hasattr(serializer, "_validated_data")
    return serializer.instance is not None and not getattr(serializer, "_errors", None) and not unvalidated
