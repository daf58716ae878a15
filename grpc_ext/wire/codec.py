"""The one seam between a serializer and the wire: rows become messages, requests become data.

A ``MessageCodec`` is built once per serializer class (``ModelProtoSerializer.get_codec``):

- encoding: an instance or a list of instances into messages (the compiled
  ``fastpath.MessageBuilder`` when the serializer compiles, the reference path
  of DRF ``.data`` + ``json_format`` otherwise), and ``values_list`` rows into
  messages built in place (``fetch``, with ``rows.RawRows`` when the backend's
  converters are known, plain ``values_list`` otherwise: the one fallback);
- decoding: a request message into the dict DRF validates.

Services never build messages themselves: they get a serializer from
``get_serializer`` and ask its codec, so overriding ``get_serializer`` is
honoured by every action.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
        self.builder = builder

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
