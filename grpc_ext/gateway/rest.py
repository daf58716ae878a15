"""The REST side of retries and entity tags: ``Idempotency-Key`` on POST, ``ETag`` and ``If-Match``.

The same records and tags as gRPC's (``grpc_ext.services.idempotency``, ``ETagModel``):

- a POST with ``Idempotency-Key: <key>`` runs once per caller and key; a retry
  gets the first response (status and body) again, the same key with another
  body is 422;
- a response that shows one object carries ``ETag: "<etag>"``; a PUT, PATCH or
  DELETE with ``If-Match`` writes only if the object's tag is one of those
  given (``*`` matches any), else 412 and nothing changes; the row is locked
  between the comparison and the write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from django.db import transaction
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from grpc_ext.models import ETAG_FIELD
from grpc_ext.services import idempotency

if TYPE_CHECKING:
    # The mixins are combined with DRF's generic views: their methods are theirs.
    _ViewBase: Any = object
else:
    _ViewBase = object

IDEMPOTENCY_HEADER = "Idempotency-Key"
UNSAFE_WRITES = frozenset({"PUT", "PATCH", "DELETE"})


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The object has changed since it was read (If-Match); read it again and retry."
    default_code = "precondition_failed"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for a different request; use a new one."
    default_code = "idempotency_key_reused"


def keyed_request(request) -> idempotency.KeyedRequest | None:
    """Return the request with its record id and fingerprint; ``None`` without an ``Idempotency-Key``.

    Built once per request (the rate limits and the view both ask), looking its record up once.
    """
    cached = getattr(request, "_grpc_ext_keyed_request", None)
    if cached is not None:
        return cached[0]
    keyed = None
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if key:
        if len(key) > idempotency.MAX_KEY_LENGTH or not key.isprintable():
            raise exceptions.ValidationError(
                {IDEMPOTENCY_HEADER: [f"At most {idempotency.MAX_KEY_LENGTH} printable characters."]}
            )
        body = json.dumps(request.data, sort_keys=True, cls=JSONEncoder).encode()
        keyed = idempotency.KeyedRequest(
            caller=idempotency.caller_scope(request.user),
            request_id=f"rest:{key}",
            digest=idempotency.fingerprint(f"REST {request.method} {request.path}", body),
            field=IDEMPOTENCY_HEADER,
        )
    request._grpc_ext_keyed_request = (keyed,)
    return keyed


def remembered_response(request) -> bytes | None:
    """Return what was remembered for the request's ``Idempotency-Key``; 422 for a key used with another body."""
    keyed = keyed_request(request)
    if keyed is None:
        return None
    try:
        return keyed.remembered()
    except idempotency.KeyReused:
        raise IdempotencyKeyReused() from None


def idempotent_response(request, handle: Callable[[], Response]) -> Response:
    """Return ``handle()``'s response, or the one remembered for the request's ``Idempotency-Key``."""
    keyed = keyed_request(request)
    if keyed is None:
        return handle()

    def write() -> bytes:
        response = handle()
        if not status.is_success(response.status_code):
            raise exceptions.APIException("not remembered")  # only a success is remembered; errors roll back
        return json.dumps({"status": response.status_code, "data": response.data}, cls=JSONEncoder).encode()

    try:
        payload = keyed.run_once(write)
    except idempotency.KeyReused:
        raise IdempotencyKeyReused() from None
    remembered = json.loads(payload)
    return Response(remembered["data"], status=remembered["status"])


class UncountedRetriesMixin(_ViewBase):
    """A retry of a remembered ``POST`` (same ``Idempotency-Key``) is answered, not counted against rate limits.

    It writes nothing; were it counted, a tight rate (signups) would refuse a
    client whose first response was lost the very object it created.
    """

    def check_throttles(self, request):
        if request.method == "POST" and remembered_response(request) is not None:
            return
        super().check_throttles(request)


class IdempotentCreateMixin(UncountedRetriesMixin):
    """``POST`` of a DRF ``CreateModelMixin`` view honours ``Idempotency-Key``."""

    def create(self, request, *args, **kwargs):
        return idempotent_response(request, lambda: super(IdempotentCreateMixin, self).create(request, *args, **kwargs))

    def finalize_response(self, request, response, *args, **kwargs):
        return with_etag(super().finalize_response(request, response, *args, **kwargs))


def if_match_tags(request) -> list[str] | None:
    """Return the tags of a write's ``If-Match`` header (quotes and ``W/`` stripped), ``None`` without one."""
    header = request.headers.get("If-Match") if request.method in UNSAFE_WRITES else None
    if not header:
        return None
    return [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",") if tag.strip()]


class ETagViewMixin(_ViewBase):
    """A DRF object view that sends ``ETag`` and honours ``If-Match`` on PUT, PATCH and DELETE (412 if stale)."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.if_match = if_match_tags(request)

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        return queryset.select_for_update() if getattr(self, "if_match", None) else queryset

    def get_object(self):
        obj = super().get_object()
        tags = getattr(self, "if_match", None)
        if tags and "*" not in tags and getattr(obj, ETAG_FIELD, None) not in tags:
            raise PreconditionFailed()
        return obj

    def if_match_transaction(self):
        return transaction.atomic() if getattr(self, "if_match", None) else nullcontext()

    def update(self, request, *args, **kwargs):
        with self.if_match_transaction():
            return super().update(request, *args, **kwargs)

    def destroy(self, request, *args, **kwargs):
        with self.if_match_transaction():
            return super().destroy(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        return with_etag(response)


def with_etag(response: Response) -> Response:
    """Add the ``ETag`` header of a response that shows one object with an etag."""
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get(ETAG_FIELD) and status.is_success(response.status_code):
        response["ETag"] = f'"{data[ETAG_FIELD]}"'
    return response
