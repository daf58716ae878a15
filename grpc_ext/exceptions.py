"""Client errors as declarative exceptions, and the one map from errors to gRPC status.

Services raise; ``grpc_ext.services.generics.Service`` catches and calls
``abort_with_error``. Nothing else in the project aborts an RPC. The status
goes out twice, as gRPC asks: the code and a readable message, and the rich
``google.rpc.Status`` in the trailers with a ``google.rpc.BadRequest`` (one
field violation per field error) or a ``google.rpc.RetryInfo``. Both are
bounded (``excerpt`` quotes input; messages and violations are capped), so
an error always reaches the client whole, with its code.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
from datetime import timedelta

import grpc
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from rest_framework import exceptions as drf_exceptions
from rest_framework.settings import api_settings
from rest_framework_simplejwt.exceptions import TokenError

from grpc_ext.signals import database_unavailable

logger = logging.getLogger(__name__)

#: Characters of a client's value quoted in a message: enough to recognise it, never the whole of a huge one.
EXCERPT_LENGTH = 40
#: Field violations one error carries, and bytes of its message and of each violation's description.
#: The status goes out in the trailers twice (message and rich status); peers refuse trailers past
#: 8-16 KB, which would turn the error into a RESOURCE_EXHAUSTED with no details.
MAX_FIELD_VIOLATIONS = 10
MAX_MESSAGE_BYTES = 512
MAX_DESCRIPTION_BYTES = 160
#: SQLite result codes (``sqlite_errorname`` prefixes) of a database the server cannot use right now:
#: locked past the timeout, unreadable, unwritable, not a database, out of space.
SQLITE_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_PERM",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_PROTOCOL",
)
#: SQLSTATE classes of a server that cannot serve right now: connection exception, insufficient
#: resources (too many connections, disk full), operator intervention (shutdown, statement timeout),
#: system error, transaction rollback (serialization failure, deadlock: retrying succeeds).
SQLSTATE_UNAVAILABLE = ("08", "53", "57", "58", "40")
#: Class names, anywhere in an error's class hierarchy, of what a client library raises when its
#: server cannot be reached: Python's own (refused, reset, timed out), redis-py's, requests'...
CONNECTION_ERROR_NAMES = frozenset({"ConnectionError", "TimeoutError"})


class GrpcError(Exception):
    """An error a client caused, with the status code and detail it gets."""

    status_code = grpc.StatusCode.INTERNAL
    default_detail = "Internal server error."
    #: Seconds after which a retry may succeed; sent as ``google.rpc.RetryInfo``.
    retry_after: float | None = None

    def __init__(self, detail: str | None = None, *, field_errors: dict[str, list[str]] | None = None):
        self.detail = detail or self.default_detail
        self.field_errors = field_errors or {}
        super().__init__(self.detail)


class InvalidArgument(GrpcError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT
    default_detail = "Invalid argument."


class NotFound(GrpcError):
    status_code = grpc.StatusCode.NOT_FOUND
    default_detail = "Not found."


class AlreadyExists(GrpcError):
    status_code = grpc.StatusCode.ALREADY_EXISTS
    default_detail = "Already exists."


class Unauthenticated(GrpcError):
    status_code = grpc.StatusCode.UNAUTHENTICATED
    default_detail = "Authentication credentials were not provided or are invalid."


class PermissionDenied(GrpcError):
    status_code = grpc.StatusCode.PERMISSION_DENIED
    default_detail = "You do not have permission to perform this action."


class FailedPrecondition(GrpcError):
    """The system is not in the state the call needs (AIP-193): the client should not retry as is."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION
    default_detail = "The call's precondition failed."


class Aborted(GrpcError):
    """A concurrency conflict: the resource changed since the client read it (a stale ``etag``, AIP-154)."""

    status_code = grpc.StatusCode.ABORTED
    default_detail = "The resource was changed by another request; read it again and retry."


class Unimplemented(GrpcError):
    status_code = grpc.StatusCode.UNIMPLEMENTED
    default_detail = "Method not implemented."


class DeadlineExceeded(GrpcError):
    status_code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_detail = "Deadline exceeded."


class Unavailable(GrpcError):
    """A failure a retry may get past: the server is draining, or a dependency is down."""

    status_code = grpc.StatusCode.UNAVAILABLE
    default_detail = "The service is unavailable; retry later."


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or used right now."""

    default_detail = "The database is unavailable; retry later."
    #: A hint (``google.rpc.RetryInfo``), as REST's ``Retry-After``; clients back off from there.
    retry_after = 1.0


class ResourceExhausted(GrpcError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_detail = "Request was throttled."

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(detail)


def excerpt(value: object, limit: int = EXCERPT_LENGTH) -> str:
    """Quote a client's value for a message: whole when short, else its start and its length.

    Every message and field violation that quotes input goes through this, so
    an error about a 10 KB value stays a few dozen bytes.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def excerpts(values: list, limit: int = 5) -> str:
    """Quote the first ``limit`` values (each an excerpt) and say how many more there are."""
    quoted = ", ".join(excerpt(value) for value in values[:limit])
    return f"{quoted} and {len(values) - limit:,} more" if len(values) > limit else quoted


def truncate_bytes(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` bytes of UTF-8, marking the cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def is_database_unavailable(exc: BaseException) -> bool:
    """Tell whether ``exc`` says the database cannot be used now (unreachable, down, locked, full).

    Connection-level faults only: a constraint violation, a syntax error or a
    missing table is not one. The drivers' own connection errors (refused,
    closed, timed out) have no SQLSTATE.
    """
    if isinstance(exc, InterfaceError):
        return True
    cause = exc.__cause__
    if isinstance(exc, DatabaseError) and isinstance(cause, sqlite3.Error):
        # "file is not a database" is a DatabaseError, not an OperationalError.
        return getattr(cause, "sqlite_errorname", "").startswith(SQLITE_UNAVAILABLE)
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)
    return sqlstate is None or sqlstate[:2] in SQLSTATE_UNAVAILABLE


def is_contention(exc: BaseException) -> bool:
    """Tell whether a database error says this call lost to others (a lock, a deadlock), not that the database is down.

    Such a call is UNAVAILABLE too (a retry may succeed), but health stays SERVING.
    """
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error):
        return getattr(cause, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    sqlstate = getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None) or ""
    return sqlstate.startswith("40") or sqlstate == "57014"


def is_service_unreachable(exc: BaseException) -> bool:
    """Tell whether ``exc`` says a backing service (a cache server, say) cannot be reached right now."""
    return any(cls.__name__ in CONNECTION_ERROR_NAMES for cls in type(exc).__mro__)


def flatten_field_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """Flatten DRF's nested error detail into ``{"field.path": [messages]}``."""
    if isinstance(detail, dict):
        errors: dict[str, list[str]] = {}
        for key, value in detail.items():
            path = key if key != api_settings.NON_FIELD_ERRORS_KEY else ""
            path = f"{prefix}.{path}" if prefix and path else (path or prefix)
            for field, messages in flatten_field_errors(value, path).items():
                errors.setdefault(field, []).extend(messages)
        return errors
    if isinstance(detail, list):
        errors = {}
        for item in detail:
            for field, messages in flatten_field_errors(item, prefix).items():
                errors.setdefault(field, []).extend(messages)
        return errors
    return {prefix: [str(detail)]}


def is_unique_violation(field_errors: dict[str, list[str]], detail_codes) -> bool:
    """Tell whether every field error is a uniqueness clash (DRF's code ``unique``)."""
    codes = flatten_field_errors(detail_codes)
    return bool(codes) and all(code == "unique" for values in codes.values() for code in values)


def describe_field_errors(field_errors: dict[str, list[str]]) -> str:
    """Render field errors as one readable line: ``title: This field may not be blank.``."""
    return "; ".join(
        f"{field}: {' '.join(messages)}" if field else " ".join(messages) for field, messages in field_errors.items()
    )


def django_error_codes(exc: DjangoValidationError) -> list[str | None]:
    """Return the codes of every error a Django ``ValidationError`` holds."""
    if hasattr(exc, "error_dict"):
        return [error.code for errors in exc.error_dict.values() for error in errors]
    return [error.code for error in exc.error_list]


def auth_detail(detail) -> str:
    """Render an authentication error's detail; simplejwt's is a dict with the reasons."""
    if not isinstance(detail, dict):
        return str(detail)
    reasons = [str(message["message"]) for message in detail.get("messages", []) if "message" in message]
    text = str(detail.get("detail", Unauthenticated.default_detail))
    return f"{text}: {'; '.join(reasons)}." if reasons else text


def to_grpc_error(exc: Exception) -> GrpcError | None:
    """Translate a known exception into a ``GrpcError``; ``None`` for unexpected ones."""
    if isinstance(exc, GrpcError):
        return exc
    if isinstance(exc, drf_exceptions.ValidationError):
        field_errors = flatten_field_errors(exc.detail)
        error_class = AlreadyExists if is_unique_violation(field_errors, exc.get_codes()) else InvalidArgument
        return error_class(describe_field_errors(field_errors) or None, field_errors=field_errors)
    if isinstance(exc, DjangoValidationError):
        field_errors = flatten_field_errors(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
        codes = django_error_codes(exc)
        error_class = AlreadyExists if codes and all(code == "unique" for code in codes) else InvalidArgument
        return error_class(describe_field_errors(field_errors) or None, field_errors=field_errors)
    if isinstance(exc, (Http404, ObjectDoesNotExist)):
        return NotFound(str(exc) or None)
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        return Unauthenticated(auth_detail(exc.detail))
    if isinstance(exc, TokenError):
        return Unauthenticated(f"Token is not valid: {exc}.")
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return PermissionDenied(str(exc.detail))
    if isinstance(exc, drf_exceptions.Throttled):
        return ResourceExhausted(str(exc.detail), retry_after=getattr(exc, "wait", None))
    if is_query_canceled(exc):
        return DeadlineExceeded(
            "The query was cancelled: it outran the call's deadline or the server's limit on a query's time, "
            "or the client went away."
        )
    if isinstance(exc, IntegrityError):
        return AlreadyExists("The object conflicts with one that already exists.")
    if is_database_unavailable(exc):
        return DatabaseUnavailable()
    if is_service_unreachable(exc):
        return unreachable_service_error(exc)
    return None


def unreachable_service_error(exc: BaseException) -> Unavailable:
    """Return the UNAVAILABLE of a backing service that cannot be reached: named if it says what it is (the cache).

    Its address stays in the server's log, never in the client's message.
    """
    service = getattr(exc, "unavailable_service", None)
    error = Unavailable(
        f"The {service} is unavailable; retry later."
        if service
        else "A service this server needs is unavailable; retry later."
    )
    error.retry_after = getattr(exc, "retry_after", None) or 1.0
    return error


def is_query_canceled(exc: Exception) -> bool:
    """Tell whether the database cancelled a statement (PostgreSQL's 57014: statement timeout or cancel)."""
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    return getattr(cause, "pgcode", None) == "57014"


#: Trailer of gRPC's retry pushback (gRFC A6): a client's retry policy waits this many milliseconds
#: before its next attempt, or makes none when the value is negative.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


#: Seconds a retry needs to be answered, besides its delay: with less time left, the client is told not to retry.
RETRY_ANSWER_TIME = 1.0


class RpcStatus(collections.namedtuple("RpcStatus", ("code", "details", "trailing_metadata")), grpc.Status):
    """A status to abort with (``grpc.Status`` is an interface only)."""


def retry_pushback(error: GrpcError, time_remaining: float | None) -> str | None:
    """Return the retry pushback of an UNAVAILABLE with a ``retry_after``, or None to leave the client's backoff.

    The client's retry policy then waits the ``RetryInfo`` delay instead of its
    own, shorter backoff: a dependency that is down (the cache fails fast for a
    second) is not asked again at once. When the call has no more time left
    than the delay plus ``RETRY_ANSWER_TIME``, the answer is no retry ("-1"):
    a retry would likely not be answered before the deadline (one that probes
    a hung cache waits for its socket timeout), and the client would get
    DEADLINE_EXCEEDED in place of this status and its message.
    """
    if error.status_code != grpc.StatusCode.UNAVAILABLE or error.retry_after is None:
        return None
    if time_remaining is not None and time_remaining <= error.retry_after + RETRY_ANSWER_TIME:
        return "-1"
    return str(max(0, round(error.retry_after * 1000)))


def status_for(exc: Exception, time_remaining: float | None = None, *, pushback: bool = True) -> grpc.Status:
    """Return the status ``exc`` maps to; unexpected errors become INTERNAL.

    ``time_remaining`` is the call's (None: no deadline), for the retry
    pushback of an UNAVAILABLE (``retry_pushback``; none unless ``pushback``).
    The traceback of an unexpected error is logged here and never sent.
    """
    try:
        error = to_grpc_error(exc)
    except Exception:
        logger.exception("Could not map an error to a status")
        error = None
    if error is None:
        logger.exception("Unhandled error in RPC", exc_info=exc)
        error = GrpcError()
    elif isinstance(error, DatabaseUnavailable):
        if not is_contention(exc):  # contention: the database works, health stays SERVING
            report_database_unavailable(exc)
    elif isinstance(error, Unavailable) and error is not exc:
        logger.warning("Service unavailable: %s: %s", type(exc).__name__, first_line(exc))
    status = rpc_status.to_status(to_status_proto(error))
    pushback_ms = retry_pushback(error, time_remaining) if pushback else None
    if pushback_ms is None:
        return status
    return RpcStatus(status.code, status.details, (*status.trailing_metadata, (RETRY_PUSHBACK_KEY, pushback_ms)))


def abort_with_error(exc: Exception, context: grpc.ServicerContext) -> None:
    """Abort the RPC with the status ``exc`` maps to (synchronous code, in a pool thread)."""
    context.abort_with_status(status_for(exc, context.time_remaining(), pushback=sends_retry_pushback(context)))


async def abort_with_error_async(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """Abort the RPC with the status ``exc`` maps to, from the event loop."""
    status = status_for(exc, context.time_remaining(), pushback=sends_retry_pushback(context))
    await context.abort(status.code, status.details, status.trailing_metadata)


def sends_retry_pushback(context: object) -> bool:
    """Tell whether the transport of ``context`` (or of the ``CallContext`` around it) can send the retry pushback.

    pygrpc-native 0.5.0 refuses every reserved (``grpc-``) trailing metadata
    key, ``grpc-retry-pushback-ms`` included, with a ``ValueError`` raised
    where it ends the call, which then never ends: the client waits until
    its deadline (docs/guides/transports.md, notes on pygrpc-native). There the status goes
    without it, and the client's retry policy keeps its own backoff.
    """
    transport_context = getattr(context, "_context", context)  # a CallContext's own
    return not type(transport_context).__module__.startswith("pygrpc_native")


def report_database_unavailable(exc: BaseException) -> None:
    """Tell the health monitors, which log the outage once; the access log has a line per failed call.

    No traceback: during an outage every call fails the same way.
    """
    reason = first_line(exc)
    logger.debug("Database unavailable: %s", reason)
    database_unavailable.send(sender=type(exc), reason=reason)


def first_line(exc: BaseException) -> str:
    """Return the first line of an error's message (drivers add hints and context on further lines)."""
    return next(iter(str(exc).strip().splitlines()), type(exc).__name__)


def to_status_proto(error: GrpcError) -> status_pb2.Status:
    """Build the rich status: code, message and the details a client can act on."""
    status = status_pb2.Status(code=error.status_code.value[0], message=truncate_bytes(error.detail, MAX_MESSAGE_BYTES))
    if error.field_errors:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=truncate_bytes(field, MAX_DESCRIPTION_BYTES),
                description=truncate_bytes(message, MAX_DESCRIPTION_BYTES),
            )
            for field, messages in error.field_errors.items()
            for message in messages
        ][:MAX_FIELD_VIOLATIONS]
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=violations))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=max(error.retry_after, 0)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status
