"""RPC handlers the framework lacks or gets wrong, one per mixin, as in DRF.

The framework's Create, Retrieve, Update and Destroy mixins are used as they
are; its List (a server stream of every row) becomes ``Stream``, and ``List``
returns one page (AIP-132). ``PartialUpdate`` takes a field mask (AIP-134).
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator

from django.core.exceptions import FieldDoesNotExist
from django.db import transaction
from django_grpc_framework import mixins as framework_mixins
from google.protobuf.message import Message

from grpc_ext.exceptions import InvalidArgument
from grpc_ext.filters import filter_list_request, get_list_filters, get_ordering_fields, parse_order_by
from grpc_ext.pagination import KeysetPagination


def model_default(serializer, name: str):
    """Return the model default of a serializer field: what an unset ``optional`` field resets to."""
    try:
        return serializer.Meta.model._meta.get_field(serializer.fields[name].source).get_default()
    except FieldDoesNotExist:
        return None


class CreateModelMixin(framework_mixins.CreateModelMixin):
    def perform_create(self, serializer):
        """Save the new object in one transaction, so a failure writes nothing."""
        with transaction.atomic():
            serializer.save()


class UpdateModelMixin(framework_mixins.UpdateModelMixin):
    """``Update``: replace every writable field; one left unset takes its model default."""

    def Update(self, request, context):
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=self.get_replacement_data(request))
        serializer.is_valid(raise_exception=True)
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
        """Save every writable field in one transaction."""
        with transaction.atomic():
            serializer.save()


class DestroyModelMixin(framework_mixins.DestroyModelMixin):
    def perform_destroy(self, instance):
        with transaction.atomic():
            instance.delete()


class ListModelMixin:
    """``List``: one page of rows and the token of the next (AIP-132)."""

    #: Ordering of List pages; the primary key is appended to break ties.
    ordering: list[str] | None = None

    def List(self, request, context):
        queryset = self.filter_queryset(self.get_queryset())
        queryset, applied_filters = self.filter_list_queryset(queryset, request)
        page = self.get_paginator(queryset).paginate(
            queryset, page_size=request.page_size, page_token=request.page_token, filters=applied_filters
        )
        response_class = self.get_list_response_class()
        results_field = next(field.name for field in response_class.DESCRIPTOR.fields if field.is_repeated)
        serializer = self.get_serializer(page.rows, many=True)
        return response_class(**{results_field: serializer.message, "next_page_token": page.next_page_token})

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

    def get_list_response_class(self) -> type[Message]:
        """Return ``<Message>ListResponse`` from the module of the serializer's proto class."""
        proto_class = self.get_serializer_class().get_proto_class()
        module = importlib.import_module(proto_class.__module__)
        return getattr(module, f"{proto_class.DESCRIPTOR.name}ListResponse")


class StreamModelMixin:
    """``Stream``: every row as a server stream, for exports.

    Rows are read and serialized a chunk at a time (one list serializer per
    chunk, so the compiled fast path applies), so memory stays flat however
    many rows there are.
    """

    stream_chunk_size = 1000

    def Stream(self, request, context) -> Iterator[Message]:
        queryset = self.filter_queryset(self.get_queryset())
        rows = queryset.iterator(chunk_size=self.stream_chunk_size)
        # Checked before each chunk: a client that cancelled, or whose deadline
        # passed, costs at most the chunk being read.
        while context.is_active() and (chunk := list(itertools.islice(rows, self.stream_chunk_size))):
            yield from self.get_serializer(chunk, many=True).message


#: The update_mask path that asks for full replacement (AIP-134).
FULL_REPLACEMENT = "*"


class PartialUpdateModelMixin:
    """``PartialUpdate``: change only the paths of ``update_mask`` (AIP-134).

    An empty mask means every field the request populates, and ``*`` full
    replacement (what ``Update`` does), as AIP-134 says; a masked ``optional``
    field left unset goes back to its model default.
    """

    def PartialUpdate(self, request, context):
        if list(request.update_mask.paths) == [FULL_REPLACEMENT]:
            return UpdateModelMixin.Update(self, request, context)
        instance = self.get_object()
        serializer = self.get_serializer(instance)
        data = serializer.message_to_data(request)
        paths = self.get_update_paths(request, serializer.writable_field_names())
        partial = {path: data[path] if path in data else model_default(serializer, path) for path in paths}
        serializer = self.get_serializer(instance, data=partial, partial=True)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            serializer.save()
        return serializer.message

    def get_update_paths(self, request, writable: list[str]) -> list[str]:
        """Return the mask's paths, checked against the fields a client may write."""
        paths = list(request.update_mask.paths)
        if not paths:
            return [field.name for field, _ in request.ListFields() if field.name in writable]
        unknown = [path for path in paths if path not in writable]
        if unknown:
            raise InvalidArgument(
                f"update_mask has paths that are not writable fields: {', '.join(unknown)}.",
                field_errors={"update_mask": [f"Not a writable field: {path}." for path in unknown]},
            )
        return paths
