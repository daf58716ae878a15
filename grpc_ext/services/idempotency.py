"""Idempotent writes (AIP-155): a retried request with the same request id returns the first response.

The record of a write is inserted in the write's own transaction, under a
unique constraint on (caller, request id). A concurrent duplicate therefore
blocks on that row (PostgreSQL) or on the database lock (SQLite) until the
first commits, fails, rolls its own write back and answers with the first
response: however many copies arrive, the write happens once. Records are
kept in the database, so a retry works across processes and restarts; they
are kept at least ``IDEMPOTENCY_TTL`` seconds, until
``manage.py clearidempotencyrecords`` deletes older ones.

Callers without credentials (a signup) share one scope, ``anonymous``: a
retry need not come from the same address (a phone changes networks), and
since the fingerprint covers the whole request (the password included), only
a client that sends the very same request gets the remembered response.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from grpc_ext.exceptions import InvalidArgument
from grpc_ext.models import IdempotencyRecord
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)

#: Longest idempotency key accepted (the REST ``Idempotency-Key`` header may be any string).
MAX_KEY_LENGTH = 128


def caller_scope(user) -> str:
    """Return the scope of a caller's request ids: the user, or ``anonymous`` for calls without credentials."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return "anonymous"


def parse_request_id(value: str, field: str = "request_id") -> str:
    """Return the canonical form of a request id, which must be a UUID (AIP-155); INVALID_ARGUMENT otherwise."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(
            f"{field} must be a UUID, got {value!r}.", field_errors={field: ["Must be a UUID."]}
        ) from None


def fingerprint(operation: str, payload: bytes) -> str:
    """Return a keyed hash of an operation and its request: equal requests, equal fingerprints.

    Keyed with ``SECRET_KEY``, so that a stored fingerprint of a request that
    holds a password cannot be used to guess it offline.
    """
    return salted_hmac("grpc_ext.idempotency", operation.encode() + b"\0" + payload, algorithm="sha256").hexdigest()


class KeyReused(InvalidArgument):
    """The request id was already used for another request."""


def remembered(caller: str, request_id: str, digest: str, field: str) -> bytes | None:
    """Return the response remembered for ``(caller, request_id)``, ``None`` if there is none.

    A remembered id with another fingerprint is INVALID_ARGUMENT: the client
    reused an id for a different request.
    """
    record = (
        IdempotencyRecord.objects.filter(caller=caller, request_id=request_id)
        .values_list("fingerprint", "response")
        .first()
    )
    if record is None:
        return None
    if record[0] != digest:
        raise KeyReused(
            f"{field} {request_id} was already used for a different request; use a new one.",
            field_errors={field: ["Already used for a different request."]},
        )
    return bytes(record[1])


class KeyedRequest:
    """A request with an idempotency key: its caller, id and fingerprint, and its record, looked up once.

    The rate limits of a call ask whether it is a retry (``remembered``)
    before its handler runs it (``run_once``): one lookup serves both.
    """

    def __init__(self, *, caller: str, request_id: str, digest: str, field: str = "request_id"):
        self.caller, self.request_id, self.digest, self.field = caller, request_id, digest, field
        self._looked_up = False
        self._remembered: bytes | None = None

    def remembered(self) -> bytes | None:
        """Return the response remembered for this request (``None``: none yet); ``KeyReused`` as ``remembered``."""
        if not self._looked_up:
            self._remembered = remembered(self.caller, self.request_id, self.digest, self.field)
            self._looked_up = True
        return self._remembered

    def run_once(self, write: Callable[[], bytes]) -> bytes:
        """Run ``write`` (which returns the response's bytes) once per ``(caller, request_id)``.

        ``write`` runs in one transaction with the insertion of its record. If it
        fails because a concurrent copy of the request won (its record is then
        committed), the winner's response is returned.
        """
        response = self.remembered()
        if response is not None:
            return response
        try:
            with transaction.atomic():
                response = write()
                IdempotencyRecord.objects.create(
                    caller=self.caller,
                    request_id=self.request_id,
                    fingerprint=self.digest,
                    response=response,
                    created=timezone.now(),
                )
        except Exception:
            # A concurrent copy may have committed first; its response is the answer.
            response = remembered(self.caller, self.request_id, self.digest, self.field)
            if response is None:
                raise
            logger.info("Request %s of %s answered with a concurrent copy's response", self.request_id, self.caller)
        return response


def clear_expired(ttl: float | None = None) -> int:
    """Delete records older than ``IDEMPOTENCY_TTL`` seconds; return how many."""
    seconds = grpc_ext_settings.IDEMPOTENCY_TTL if ttl is None else ttl
    deleted, _ = IdempotencyRecord.objects.filter(created__lt=timezone.now() - timedelta(seconds=seconds)).delete()
    return deleted
