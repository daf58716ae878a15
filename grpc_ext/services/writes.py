"""Writes beyond the framework's: batch create (AIP-233), retries (AIP-155) and entity tags (AIP-154).

Each is one mixin over the plain handlers of ``grpc_ext.services.mixins``:

- ``BatchCreateModelMixin``: ``BatchCreate`` validates every item, then
  creates them all in one transaction, or none; an error names its item
  (``requests[3].title``). Permissions and rate limits are Create's, and a
  rate limit counts each item.
- ``IdempotentCreateMixin``: a Create or BatchCreate with a ``request_id``
  runs once per caller and id (``grpc_ext.services.idempotency``).
- ``ETagMixin``: Update, PartialUpdate and Destroy with an ``etag`` lock the
  row, compare, and write in one transaction; a stale tag is ABORTED.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from google.protobuf.message import Message
from rest_framework import exceptions as drf_exceptions
from rest_framework.fields import get_error_detail

from grpc_ext.exceptions import Aborted, InvalidArgument, describe_field_errors, flatten_field_errors
from grpc_ext.models import ETAG_FIELD
from grpc_ext.services import idempotency
from grpc_ext.services.mixins import _ServiceBase, repeated_field, response_class_for
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.wire.bulk import ItemValidationError
from grpc_ext.wire.serializers import skip_surrogate_checks

#: Actions whose request may carry an ``etag`` to compare with the row's.
ETAG_ACTIONS = frozenset({"Update", "PartialUpdate", "Destroy"})
#: Field of a request that carries its idempotency key.
REQUEST_ID_FIELD = "request_id"


def item_errors(index: int, exc: Exception) -> drf_exceptions.ValidationError:
    """Return a validation error of one batch item as an error of ``requests[index]``, codes kept."""
    detail = get_error_detail(exc) if isinstance(exc, DjangoValidationError) else getattr(exc, "detail", str(exc))
    return drf_exceptions.ValidationError({f"requests[{index}]": detail})


class BatchCreateModelMixin(_ServiceBase):
    """``BatchCreate`` (AIP-233): create every item in one transaction, answered in request order.

    A serializer may define ``create_many(validated_data_list)`` to write the
    items in bulk; otherwise each item is saved as ``Create`` saves it. Either
    way the batch is one transaction. The
    service's ``perform_batch_create`` passes the same extra values as
    ``perform_create`` (an owner): ``get_create_values``.
    """

    action: str
    #: Items of the batch being checked by ``initial`` (``None`` outside a BatchCreate's checks).
    batch_items: int | None = None

    def initial(self) -> None:
        """Check BatchCreate as Create (``self.action`` reads ``Create``), a rate limit counting each item."""
        if self.action != "BatchCreate":
            return super().initial()
        self.batch_items = len(self.request.requests)
        self.action, self.throttle_count = "Create", max(1, self.batch_items)
        try:
            super().initial()
        finally:
            self.action, self.throttle_count, self.batch_items = "BatchCreate", 1, None

    def check_throttles(self) -> None:
        """Refuse an oversized batch before it is counted: INVALID_ARGUMENT, not a spent rate limit."""
        if self.batch_items is not None:
            self.check_batch_size(self.batch_items)
        super().check_throttles()

    def check_batch_size(self, items: int) -> None:
        limit = grpc_ext_settings.MAX_BATCH_SIZE
        if items > limit:
            raise InvalidArgument(
                f"A batch holds at most {limit} requests, got {items}.",
                field_errors={"requests": [f"At most {limit} requests."]},
            )

    def BatchCreate(self, request, context):
        items = request.requests
        self.check_batch_size(len(items))
        for index, item in enumerate(items):
            if getattr(item, REQUEST_ID_FIELD, ""):
                raise InvalidArgument(
                    f"requests[{index}].request_id: set request_id on the batch, not on its items.",
                    field_errors={f"requests[{index}].request_id": ["Set request_id on the batch, not on its items."]},
                )
        read = self.get_serializer().message_to_data
        serializer = self.get_serializer(data=[read(item) for item in items], many=True)
        skip_surrogate_checks(getattr(serializer, "child", None))
        if not serializer.is_valid():
            errors = serializer.errors
            by_item = errors.items() if isinstance(errors, dict) else enumerate(errors)
            raise drf_exceptions.ValidationError({f"requests[{index}]": error for index, error in by_item if error})
        with transaction.atomic(savepoint=False):  # inside a retry-safe call's transaction, no savepoint
            instances = self.perform_batch_create(serializer)
        response_class = response_class_for(self.get_serializer_class(), "BatchCreateResponse")
        response = response_class()
        rows = getattr(response, repeated_field(response_class))
        codec = self.get_codec()
        if codec is not None and codec.encodes_instances:
            codec.encode_into(rows, instances)  # each message built in place in the response
        else:
            rows.extend(self.get_serializer(instance).message for instance in instances)
        return response

    def perform_batch_create(self, serializer) -> list:
        """Create every item: in bulk if the serializer has ``create_many``, else one ``save`` per item."""
        values = self.get_create_values()
        validated = [{**attrs, **values} for attrs in serializer.validated_data]
        child = serializer.child
        if hasattr(child, "create_many"):
            try:
                return child.create_many(validated)
            except ItemValidationError as exc:
                raise item_errors(exc.index, exc) from exc
        instances = []
        for index, attrs in enumerate(validated):
            try:
                instances.append(child.create(attrs))
            except (DjangoValidationError, drf_exceptions.ValidationError) as exc:
                raise item_errors(index, exc) from exc
        return instances


class IdempotentCreateMixin(_ServiceBase):
    """Create and BatchCreate with a ``request_id`` (a UUID) write once per caller and id (AIP-155).

    A retry returns the first call's response; the same id with another
    request is INVALID_ARGUMENT. Without a ``request_id`` nothing changes.
    """

    def Create(self, request, context):
        return self.run_idempotent(request, lambda: super(IdempotentCreateMixin, self).Create(request, context))

    def BatchCreate(self, request, context):
        return self.run_idempotent(request, lambda: super(IdempotentCreateMixin, self).BatchCreate(request, context))

    def keyed_request(self, request: Message) -> idempotency.KeyedRequest | None:
        """Return the request with its id and the fingerprint of the rest of it; ``None`` without a ``request_id``.

        Built once per call (the rate limits and the handler both ask), looking its record up once.
        """
        cached = getattr(self, "_keyed_request", None)
        if cached is not None and cached[0] is request:
            return cached[1]
        keyed = None
        raw_id = getattr(request, REQUEST_ID_FIELD, "")
        if raw_id:
            try:
                request_id = idempotency.parse_request_id(raw_id)
            except InvalidArgument as exc:
                raise self.with_other_field_errors(exc, request) from None
            unkeyed = type(request)()
            unkeyed.CopyFrom(request)
            unkeyed.ClearField(REQUEST_ID_FIELD)
            operation = f"{type(request).DESCRIPTOR.full_name}"
            keyed = idempotency.KeyedRequest(
                caller=idempotency.caller_scope(self.user),
                request_id=request_id,
                digest=idempotency.fingerprint(operation, unkeyed.SerializeToString(deterministic=True)),
            )
        self._keyed_request = (request, keyed)
        return keyed

    def with_other_field_errors(self, error: InvalidArgument, request: Message) -> InvalidArgument:
        """Return ``error`` (a bad ``request_id``) with the violations of the request's other fields added.

        A BadRequest names every field the client has to fix, not only the first one checked.
        """
        field_errors = {**error.field_errors}
        for field, messages in self.request_field_errors(request).items():
            field_errors.setdefault(field, []).extend(messages)
        if field_errors == error.field_errors:
            return error
        return InvalidArgument(f"{error.detail} {describe_field_errors(field_errors)}.", field_errors=field_errors)

    def request_field_errors(self, request: Message) -> dict[str, list[str]]:
        """Return what the action's serializer finds wrong in ``request`` (``{}``: nothing); writes nothing."""
        if getattr(self, "batch_items", None) is not None or self.action == "BatchCreate":
            read = self.get_serializer().message_to_data
            items = getattr(request, "requests", [])  # a BatchCreateRequest's
            serializer = self.get_serializer(data=[read(item) for item in items], many=True)
        else:
            serializer = self.get_serializer(message=request)
        if serializer.is_valid():
            return {}
        errors = serializer.errors
        if isinstance(errors, list):
            errors = {f"requests[{index}]": error for index, error in enumerate(errors) if error}
        return {
            field: messages for field, messages in flatten_field_errors(errors).items() if field != REQUEST_ID_FIELD
        }

    def check_throttles(self) -> None:
        """Answer a retry of a remembered request without counting it: it writes nothing.

        A client whose Create timed out retries until it gets an answer; were
        the retries counted, a tight rate (signups) would refuse it the very
        object it created.
        """
        keyed = self.keyed_request(self.request)
        if keyed is not None and keyed.remembered() is not None:
            return
        super().check_throttles()

    def run_idempotent(self, request: Message, handle: Callable[[], Message]) -> Message:
        keyed = self.keyed_request(request)
        if keyed is None:
            return handle()
        response_class: list[type[Message]] = []

        def write() -> bytes:
            response = handle()
            response_class.append(type(response))
            return response.SerializeToString()

        payload = keyed.run_once(write)
        return (response_class[0] if response_class else self.idempotent_response_class()).FromString(payload)

    def idempotent_response_class(self) -> type[Message]:
        """Return the response type of this action, to read a remembered response."""
        if self.action == "BatchCreate":
            return response_class_for(self.get_serializer_class(), "BatchCreateResponse")
        return self.get_serializer_class().get_proto_class()


class ETagMixin(_ServiceBase):
    """Update, PartialUpdate and Destroy with an ``etag``: a stale one is ABORTED and changes nothing (AIP-154).

    The row is read ``FOR UPDATE`` in the write's transaction (SQLite takes
    its write lock when the transaction begins), so the comparison and the
    write are one atomic step: of two clients with the same etag, one writes
    and the other is ABORTED.
    """

    def requested_etag(self) -> str:
        if self.action not in ETAG_ACTIONS:
            return ""
        return getattr(self.request, ETAG_FIELD, "")

    def etag_transaction(self):
        return transaction.atomic() if self.requested_etag() else nullcontext()

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        return queryset.select_for_update() if self.requested_etag() else queryset

    def get_object(self):
        obj = super().get_object()
        expected = self.requested_etag()
        if expected and getattr(obj, ETAG_FIELD, None) != expected:
            raise Aborted(
                f"etag {expected!r} is stale: the {type(obj).__name__} has changed since; read it again and retry.",
            )
        return obj

    def Update(self, request, context):
        with self.etag_transaction():
            return super().Update(request, context)

    def PartialUpdate(self, request, context):
        with self.etag_transaction():
            return super().PartialUpdate(request, context)

    def Destroy(self, request, context):
        with self.etag_transaction():
            return super().Destroy(request, context)
