"""RPC handlers the framework lacks or gets wrong, one per mixin, as in DRF.

The framework's Create and Destroy mixins are used with transactional hooks
(none around a domain function atomic by itself: ``write_transaction``); its
List (a server stream of every row) becomes ``Stream`` (batches of rows), and
``List`` returns one page (AIP-132). ``PartialUpdate`` takes a field mask
(AIP-134). Every action gets its serializer from ``get_serializer`` and its
messages from that serializer's codec (``grpc_ext.wire.codec``, the one interface
they encode and decode through), and every write
goes through ``perform_create``/``perform_update``/``perform_destroy``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldDoesNotExist
from django.db import router, transaction
from django_grpc_framework import generics as framework_generics
from django_grpc_framework import mixins as framework_mixins
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from grpc_ext.exceptions import InvalidArgument, excerpt, excerpts
from grpc_ext.services.filters import filter_list_request, get_list_filters, get_ordering_fields, parse_order_by
from grpc_ext.services.pagination import KeysetPagination
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.codec import MessageCodec
from grpc_ext.wire.serializers import skip_surrogate_checks

if TYPE_CHECKING:
    # The mixins are combined with the framework's GenericService (untyped): its methods are theirs.
    _ServiceBase: Any = framework_generics.GenericService
else:
    _ServiceBase = object


def model_default(serializer, name: str):
    """Return the model default of a serializer field: what an unset ``optional`` field resets to."""
    try:
        return serializer.Meta.model._meta.get_field(serializer.fields[name].source).get_default()
    except FieldDoesNotExist:
        return None


def write_transaction(serializer, action: str) -> AbstractContextManager:
    """Return what a save for ``action`` (``"create"``, ``"update"``) runs in, so that a failure writes nothing.

    A transaction (``savepoint=False``: inside a caller's, a retry-safe
    Create's, a savepoint would cost two round trips and protect nothing),
    unless the save only calls a domain function that says it is atomic by
    itself, as a Django view opts out of ``ATOMIC_REQUESTS``: with
    ``@transaction.non_atomic_requests`` (``posts.services.post_create``
    writes one statement; ``users.services`` wraps its writes in
    ``transaction.atomic``). On PostgreSQL such a Create is one round trip,
    not three (``BEGIN``, ``INSERT``, ``COMMIT``). A function that does not
    say so, ModelSerializer's own save (the row, then its many-to-many) and an
    overridden ``create``/``update``/``save`` run in the handler's transaction.
    """
    database = router.db_for_write(serializer.Meta.model)
    service_function = getattr(serializer, "service_function", None)
    function = service_function(action) if service_function is not None else None
    if function is not None and database in getattr(function, "_non_atomic_requests", ()):
        return nullcontext()
    return transaction.atomic(using=database, savepoint=False)


def hook_transaction(service, hook: str, model) -> AbstractContextManager:
    """Return what a call of the service's write ``hook`` runs in: a transaction when a subclass overrides it.

    The framework's own hooks choose their transaction (``write_transaction``).
    An override usually writes more than the save it extends
    (``super().perform_update(serializer)``, then another write): both run in
    one transaction, so a failure of the second leaves nothing of the first.
    """
    if getattr(type(service), hook) is OWN_WRITE_HOOKS.get(hook):
        return nullcontext()
    return transaction.atomic(using=router.db_for_write(model), savepoint=False)


class CreateModelMixin(framework_mixins.CreateModelMixin):
    def Create(self, request, context):
        serializer = self.get_serializer(message=request)
        skip_surrogate_checks(serializer)  # a protobuf string cannot hold one
        serializer.is_valid(raise_exception=True)
        with hook_transaction(self, "perform_create", serializer.Meta.model):
            self.perform_create(serializer)
        return serializer.message

    def perform_create(self, serializer):
        """Save the new object, in a transaction unless its domain function is atomic by itself (``write_transaction``).

        An override runs in one transaction as a whole (``hook_transaction``).
        """
        values = self.get_create_values()
        with write_transaction(serializer, "create"):
            serializer.save(**values)

    def get_create_values(self) -> dict:
        """Return values every created object gets besides the request's (the caller as owner)."""
        return {}


class UpdateHooksMixin(_ServiceBase):
    """What ``Update`` and ``PartialUpdate`` share: the replacement of every field and ``perform_update``."""

    def replace_object(self, request) -> Message:
        """Replace every writable field of the object the request names; return its message."""
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=self.get_replacement_data(request))
        serializer.is_valid(raise_exception=True)
        with hook_transaction(self, "perform_update", serializer.Meta.model):
            self.perform_update(serializer)
        return serializer.message

    def get_replacement_data(self, request) -> dict:
        """Return the request's writable fields, an unset ``optional`` one at its model default.

        Write-only fields (a password) are the exception: unset means unchanged,
        since they have no default to go back to.
        """
        serializer = self.get_serializer()
        data = serializer.message_to_data(request)
        for name, field in serializer.fields.items():
            if not (field.read_only or field.write_only or name in data):
                data[name] = model_default(serializer, name)
        return data

    def perform_update(self, serializer):
        """Save the changed fields (Update and PartialUpdate), in a transaction unless its domain function is atomic.

        See ``write_transaction``; an override runs in one transaction as a whole (``hook_transaction``).
        """
        with write_transaction(serializer, "update"):
            serializer.save()


class UpdateModelMixin(UpdateHooksMixin, framework_mixins.UpdateModelMixin):
    """``Update``: replace every writable field; one left unset takes its model default."""

    def Update(self, request, context):
        return self.replace_object(request)


class DestroyModelMixin(framework_mixins.DestroyModelMixin):
    def Destroy(self, request, context):
        instance = self.get_object()
        with hook_transaction(self, "perform_destroy", type(instance)):
            self.perform_destroy(instance)
        return empty_pb2.Empty()

    def perform_destroy(self, instance):
        with transaction.atomic(savepoint=False):
            instance.delete()


class CodecMixin(_ServiceBase):
    """Find the codec that encodes the service's messages: the one of the serializer ``get_serializer`` returns."""

    def get_codec(self) -> MessageCodec | None:
        """Return the codec of ``get_serializer()``'s class, or ``None`` if it has none (a plain serializer).

        While ``get_serializer`` is the framework's, it returns an instance of
        ``get_serializer_class()``, so the codec is read from that class with
        no serializer built per call (DRF's field set-up, about 25 µs). An
        overridden ``get_serializer`` is called, and its serializer's class
        decides.
        """
        if type(self).get_serializer is framework_generics.GenericService.get_serializer:
            serializer_class = self.get_serializer_class()
        else:
            serializer_class = type(self.get_serializer())
        get_codec = getattr(serializer_class, "get_codec", None)
        return get_codec() if get_codec is not None else None

    def get_row_codec(self) -> MessageCodec | None:
        """Return the codec if it builds messages from ``values_list`` rows, else ``None`` (model instances)."""
        codec = self.get_codec()
        return codec if codec is not None and codec.columns is not None else None

    def encode_page(self, page, repeated) -> None:
        """Append the messages of a page's rows to a response's ``repeated`` field (List and Stream).

        Rows of the codec (``page.fill``, from ``MessageCodec.fetch``) are built
        in place in the response; model instances are encoded by the
        serializer ``get_serializer(rows, many=True)`` (its codec's ``encode_many``).
        """
        if page.fill is not None:
            page.fill(page.rows, repeated.add)
        else:
            repeated.extend(self.get_serializer(page.rows, many=True).message)


class RetrieveModelMixin(CodecMixin):
    def Retrieve(self, request, context):
        instance = self.get_object()
        codec = self.get_codec()
        if codec is not None and codec.encodes_instances:
            return codec.encode_instance(instance)
        return self.get_serializer(instance).message


class ListModelMixin(CodecMixin):
    """``List``: one page of rows and the token of the next (AIP-132).

    Rows go from the cursor into messages with no model instance when the
    codec of ``get_serializer(many=True)`` has columns; the messages are the
    serializer's, byte for byte.
    """

    #: Ordering of List pages; the primary key is appended to break ties.
    ordering: list[str] | None = None

    def List(self, request, context):
        queryset = self.filter_queryset(self.get_queryset())
        queryset, applied_filters = self.filter_list_queryset(queryset, request)
        codec = self.get_row_codec()
        page = self.get_paginator(queryset).paginate(
            queryset,
            page_size=request.page_size,
            page_token=request.page_token,
            filters=applied_filters,
            codec=codec,
        )
        response_class = response_class_for(self.get_serializer_class(), "ListResponse")
        response = response_class(next_page_token=page.next_page_token)
        rows = getattr(response, repeated_field(response_class))
        self.encode_page(page, rows)
        self.fit_page(response, rows, page)
        return response

    def fit_page(self, response, rows, page) -> None:
        """Drop the rows past ``MAX_LIST_RESPONSE_BYTES`` and point the next page token at the first of them.

        AIP-158 lets a page hold fewer rows than ``page_size``; a page larger
        than the gRPC message limit would fail for the client instead. The
        first row always stays, so that paging goes on.
        """
        budget = grpc_ext_settings.MAX_LIST_RESPONSE_BYTES
        if response.ByteSize() <= budget:
            return
        total, keep = 0, 0
        for row in rows:
            total += row.ByteSize() + 5  # the field's tag and length prefix, at most
            if total > budget and keep:
                break
            keep += 1
        if keep < len(rows):
            del rows[keep:]
            response.next_page_token = page.token_for(page.rows[keep - 1])

    def filter_list_queryset(self, queryset, request) -> tuple:
        """Apply the request's filters (``Meta.list_filters``); return the queryset and the values applied."""
        return filter_list_request(queryset, request, get_list_filters(self.get_serializer_class()))

    def get_list_ordering(self, queryset) -> list[str]:
        """Return the request's ``order_by`` (``Meta.ordering_fields`` only), else the default ordering."""
        order_by = getattr(self.request, "order_by", "")
        ordering = parse_order_by(order_by, get_ordering_fields(self.get_serializer_class())) if order_by else []
        return ordering or self.ordering or list(queryset.model._meta.ordering) or [queryset.model._meta.pk.name]

    def get_paginator(self, queryset) -> KeysetPagination:
        """Return the paginator; override to page in another order."""
        return KeysetPagination(self.get_list_ordering(queryset))


class StreamModelMixin(CodecMixin):
    """``Stream``: every row as a server stream of batches (``repeated`` rows per message), for exports.

    A message per row would cost a send per row; a batch is one send. Rows
    are read a batch at a time, one keyset query each, so memory stays flat
    however many rows there are, and no batch is read after the client has
    cancelled or its deadline has passed.
    """

    def Stream(self, request, context) -> Iterator[Message]:
        queryset = self.filter_queryset(self.get_queryset())
        responses = self.get_stream_responses(queryset, self.get_stream_batch_size(request))
        # Checked before each batch: a client that cancelled costs at most the batch in hand.
        while context.is_active() and (response := next(responses, None)) is not None:
            yield response

    def get_stream_batch_size(self, request) -> int:
        """Return the request's ``batch_size`` (0: ``STREAM_BATCH_SIZE``), at most ``MAX_STREAM_BATCH_SIZE``."""
        requested = getattr(request, "batch_size", 0)
        if requested < 0:
            raise InvalidArgument(
                "batch_size must not be negative.", field_errors={"batch_size": ["Must not be negative."]}
            )
        return min(requested or grpc_ext_settings.STREAM_BATCH_SIZE, grpc_ext_settings.MAX_STREAM_BATCH_SIZE)

    def get_stream_responses(self, queryset, size: int) -> Iterator[Message]:
        """Yield one ``<Message>StreamResponse`` per ``size`` rows, each batch a short keyset query of its own.

        Batches are List's pages (same order, same keyset): no cursor stays
        open between messages, so each batch can be read on whichever thread
        serves it, and a stream that is cancelled simply reads no more.
        """
        response_class = response_class_for(self.get_serializer_class(), "StreamResponse")
        field = repeated_field(response_class)
        codec = self.get_row_codec()
        batches = StreamBatches(self.get_stream_ordering(queryset))
        token = ""
        while True:
            page = batches.paginate(queryset, page_size=size, page_token=token, codec=codec)
            if not page.rows:
                return
            response = response_class()
            self.encode_page(page, getattr(response, field))
            yield response
            if not page.next_page_token:
                return
            token = page.next_page_token

    def get_stream_ordering(self, queryset) -> list[str]:
        """Return List's ordering when the service has one, else the primary key's."""
        list_ordering = getattr(self, "get_list_ordering", None)
        return list_ordering(queryset) if list_ordering is not None else [queryset.model._meta.pk.name]


class StreamBatches(KeysetPagination):
    """List's keyset pages, sized by the Stream's (already checked) batch size."""

    def get_page_size(self, requested: int) -> int:
        return requested


def response_class_for(serializer_class, suffix: str) -> type[Message]:
    """Return ``<Message><suffix>`` from the module of the serializer's proto class."""
    proto_class = serializer_class.get_proto_class()
    module = importlib.import_module(proto_class.__module__)
    return getattr(module, f"{proto_class.DESCRIPTOR.name}{suffix}")


def repeated_field(response_class: type[Message]) -> str:
    """Return the name of the response's ``repeated`` rows field."""
    return next(field.name for field in response_class.DESCRIPTOR.fields if field.is_repeated)


#: The update_mask path that asks for full replacement (AIP-134).
FULL_REPLACEMENT = "*"


class PartialUpdateModelMixin(UpdateHooksMixin):
    """``PartialUpdate``: change only the paths of ``update_mask`` (AIP-134).

    An empty mask means every field the request populates, and ``*`` full
    replacement (``Update``), as AIP-134 says; a masked ``optional`` field left
    unset goes back to its model default. It saves through ``perform_update``,
    the hook ``Update`` calls, so a service that overrides it sees both.
    """

    def PartialUpdate(self, request, context):
        if list(request.update_mask.paths) == [FULL_REPLACEMENT]:
            return self.replace_object(request)
        instance = self.get_object()
        serializer = self.get_serializer(instance)
        # Checked before the request is read: reading prints the mask, which fails on a malformed path.
        paths = self.get_update_paths(request, serializer.writable_field_names())
        data = serializer.message_to_data(request)
        partial = {path: data[path] if path in data else model_default(serializer, path) for path in paths}
        serializer = self.get_serializer(instance, data=partial, partial=True)
        serializer.is_valid(raise_exception=True)
        with hook_transaction(self, "perform_update", serializer.Meta.model):
            self.perform_update(serializer)
        return serializer.message

    def get_update_paths(self, request, writable: list[str]) -> list[str]:
        """Return the mask's paths, checked against the fields a client may write."""
        paths = list(request.update_mask.paths)
        if not paths:
            return [field.name for field, _ in request.ListFields() if field.name in writable]
        unknown = [path for path in paths if path not in writable]
        if unknown:
            raise InvalidArgument(
                f"update_mask has paths that are not writable fields: {excerpts(unknown)}.",
                field_errors={"update_mask": [f"Not a writable field: {excerpt(path)}." for path in unknown[:5]]},
            )
        return paths


#: The write hooks whose transaction the framework chooses itself; an override of one runs in a transaction.
OWN_WRITE_HOOKS = {
    "perform_create": CreateModelMixin.perform_create,
    "perform_update": UpdateHooksMixin.perform_update,
    "perform_destroy": DestroyModelMixin.perform_destroy,
}
