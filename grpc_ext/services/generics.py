"""Service base classes: the framework's, with one error contract and a correct request cycle.

``Service.as_servicer`` replaces the framework's: that one sent
``grpc_request_finished`` (which closes the database connection) before a
streaming handler had produced anything, and let every exception end the RPC
as UNKNOWN with a Python repr as its message. Here each handler's errors go
through ``grpc_ext.exceptions.abort_with_error``, the one place that maps them
to status codes, and the request-finished signal fires when the response,
streamed or not, is complete. Before the handler runs, ``Service.initial``
authenticates the caller and checks permissions and rate limits, as DRF's
``APIView.initial`` does.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from functools import update_wrapper
from typing import cast

import grpc
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import close_old_connections
from django_grpc_framework import generics as framework_generics

from grpc_ext.exceptions import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unimplemented,
    abort_with_error,
    abort_with_error_async,
    excerpt,
    to_grpc_error,
)
from grpc_ext.server.calls import (
    CallContext,
    RpcAborted,
    Status,
    check_deadline,
    in_pool,
    prepare_database,
    serving_pool,
)
from grpc_ext.server.tracing import record_user
from grpc_ext.services import mixins, writes
from grpc_ext.services.throttling import allow_requests, client_request
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.signals import grpc_got_request_exception, grpc_request_finished, grpc_request_started
from grpc_ext.wire.lookups import PreparedLookups


class Service(framework_generics.GenericService):
    """A generic service whose servicer maps every error to a gRPC status.

    ``authentication_classes``, ``permission_classes`` and ``throttle_classes``
    default to ``GRPC_FRAMEWORK['DEFAULT_*']``. Override ``get_permissions`` or
    ``get_throttles`` for rules that depend on ``self.action``.
    """

    authentication_classes: list[type] | None = None
    permission_classes: list[type] | None = None
    throttle_classes: list[type] | None = None
    user = AnonymousUser()
    auth = None
    #: Requests this call counts as against rate limits (a batch counts each item).
    throttle_count = 1

    def initial(self) -> None:
        """Identify the caller, then check permissions and rate limits, before the handler runs."""
        self.perform_authentication()
        record_user(self.user)
        self.check_permissions()
        self.check_throttles()

    def get_authenticators(self) -> list:
        return _instances(self.authentication_classes, "DEFAULT_AUTHENTICATION_CLASSES")

    def get_permissions(self) -> list:
        """Return the permissions of this call; override to vary them by ``self.action``."""
        return _instances(self.permission_classes, "DEFAULT_PERMISSION_CLASSES")

    def get_throttles(self) -> list:
        """Return the rate limits of this call; override to vary them by ``self.action``."""
        return _instances(self.throttle_classes, "DEFAULT_THROTTLE_CLASSES")

    def perform_authentication(self) -> None:
        """Set ``user`` and ``auth`` from the first authenticator that recognises the call."""
        for authenticator in self.get_authenticators():
            result = authenticator.authenticate(self)
            if result is not None:
                self.user, self.auth = result
                return

    def check_permissions(self) -> None:
        for permission in self.get_permissions():
            if not permission.has_permission(self):
                self.permission_denied(permission.message)

    def check_object_permissions(self, obj) -> None:
        """Check the caller may act on ``obj``; ``get_object`` calls this."""
        for permission in self.get_permissions():
            if not permission.has_object_permission(self, obj):
                self.permission_denied(permission.message)

    def permission_denied(self, message: str | None = None) -> None:
        """Raise UNAUTHENTICATED for an anonymous caller, PERMISSION_DENIED otherwise."""
        if self.auth is None:
            raise Unauthenticated("Authentication credentials were not provided.")
        raise PermissionDenied(message)

    def check_throttles(self) -> None:
        """Count this call ``throttle_count`` times (a batch, once per item) against each rate limit."""
        throttles = self.get_throttles()
        if not throttles:  # the default: no rate limit, and no caller address to work out
            return
        request = client_request(self)
        waits = [
            throttle.wait()
            for throttle in throttles
            if not allow_requests(throttle, request, self, self.throttle_count)
        ]
        if waits:
            retry_after = max((wait for wait in waits if wait is not None), default=None)
            detail = "Request was throttled."
            if retry_after is not None:
                detail += f" Expected available in {int(retry_after) + 1} seconds."
            raise ResourceExhausted(detail, retry_after=retry_after)

    @classmethod
    def as_servicer(cls, **initkwargs):
        """Return a servicer object for ``add_<Name>Servicer_to_server``.

        The framework's ``as_servicer`` still checks ``initkwargs`` and guards
        the class queryset; its servicer object is not used, since its handlers
        are the ones this class replaces.
        """
        framework_generics.GenericService.as_servicer.__func__(cls, **initkwargs)

        class Servicer:
            def __getattr__(self, action):
                if not hasattr(cls, action):
                    return cls._make_unimplemented_handler(action)
                handler = cls._make_handler(action, initkwargs)
                update_wrapper(handler, getattr(cls, action))
                return handler

        update_wrapper(Servicer, cls, updated=())
        return Servicer()

    @classmethod
    def _make_unimplemented_handler(cls, action: str):
        """Answer UNIMPLEMENTED for an RPC of the proto that the service does not define."""

        async def unimplemented(request, context):
            await abort_with_error_async(Unimplemented(f"{cls.__name__} does not implement {action}."), context)

        return unimplemented

    @classmethod
    def _make_handler(cls, action: str, initkwargs: dict):
        """Return the ``grpc.aio`` handler of ``action``: the Django work in the thread pool, I/O on the loop.

        A unary call is one hop to the pool: ``RequestCycle.run_unary`` runs
        the request-started signal, ``initial``, the action and the
        request-finished signal there together. A stream hops once per
        response message (``RequestCycle.next_batch``, a batch of rows) and
        writes it from the loop, so a client that stops reading holds no
        thread.
        """
        cycle = RequestCycle(cls, action, initkwargs)

        async def unary_handler(request, context: grpc.aio.ServicerContext):
            call = CallContext(context)
            response, status = await in_pool(call, cycle.run_unary, request, call)
            if status is not None:
                await context.abort(status.code, status.details, status.trailing_metadata)
            return response

        async def stream_handler(request, context: grpc.aio.ServicerContext):
            call = CallContext(context)
            stream = StreamState(cls)
            try:
                while True:
                    response, status = await in_pool(call, cycle.next_batch, stream, request, call)
                    if status is not None:
                        await context.abort(status.code, status.details, status.trailing_metadata)
                    if response is None:
                        return
                    yield response
            finally:
                if not stream.finished:  # cancelled, or stopped by a drain: close it after the hop in hand
                    loop = asyncio.get_running_loop()
                    loop.run_in_executor(serving_pool(loop), stream.close)

        return stream_handler if cycle.streaming else unary_handler


class RequestCycle:
    """The synchronous life of one call of ``service_class.action``, whatever carries it.

    ``run_unary`` (or ``next_batch``, once per message of a stream) ->
    ``start`` (request-started signal, database check, deadline, a new
    service, ``Service.initial``, the action) -> ``failed`` for any error
    (the one error map; the handler's own ``abort`` included) -> the
    request-finished signal. gRPC's handlers (``Service._make_handler``) run
    these steps on the pool; the Connect and gRPC-Web endpoints
    (``grpc_ext.connect``) run them in the web server's thread. Both pass a
    ``CallContext``, so the service sees the same ``context`` either way.
    """

    def __init__(self, service_class: type[Service], action: str, initkwargs: dict):
        self.service_class = service_class
        self.action = action
        self.initkwargs = initkwargs
        self.streaming = inspect.isgeneratorfunction(getattr(service_class, action))

    def start(self, request, call: CallContext):
        """Check the call and the caller, then run the action; return its response (a stream: its iterator)."""
        cls = self.service_class
        grpc_request_started.send(sender=cls, request=request, context=call)
        prepare_database(call)
        check_deadline(call)
        service = cls(**self.initkwargs)
        service.request, service.context, service.action = request, call, self.action
        service.initial()
        return getattr(service, self.action)(request, call)

    def failed(self, exc: Exception, request, call: CallContext) -> Status | None:
        """Return the status ``exc`` ends the call with, the handler's own ``abort`` included."""
        if not isinstance(exc, RpcAborted):
            # A CallContext answers as grpc's ServicerContext does (abort, set_code, trailing metadata).
            _report_unexpected(self.service_class, request, cast(grpc.ServicerContext, call), exc)
            try:
                abort_with_error(exc, cast(grpc.ServicerContext, call))
            except RpcAborted:
                pass
        return call.status

    def run_unary(self, request, call: CallContext) -> tuple[object, Status | None]:
        """Run a unary call whole; return its response, or ``None`` and the status it failed with."""
        try:
            return self.start(request, call), None
        except Exception as exc:
            return None, self.failed(exc, request, call)
        finally:
            grpc_request_finished.send(sender=self.service_class)

    def next_batch(self, stream: StreamState, request, call: CallContext) -> tuple[object, Status | None]:
        """Return the stream's next message (``None`` at its end) and the status it failed with, if any.

        Each hop ends by closing the connections Django would close after a
        request, as the finished signal does after the last.
        """
        with stream.lock:
            if stream.finished:
                return None, None
            response = None
            try:
                if stream.responses is None:
                    stream.responses = iter(self.start(request, call))
                response = next(stream.responses, None)
                if response is not None:
                    return response, None
                return None, None
            except Exception as exc:
                return None, self.failed(exc, request, call)
            finally:
                if response is None:
                    stream.finished = True
                    grpc_request_finished.send(sender=self.service_class)
                else:
                    close_old_connections()


class StreamState:
    """A stream's generator, driven one hop at a time from whichever pool thread runs the hop."""

    def __init__(self, sender: type):
        self.sender = sender
        self.responses: Iterator | None = None
        self.finished = False
        self.lock = threading.Lock()

    def close(self) -> None:
        """Close an abandoned stream's generator and end its request cycle (in a pool thread)."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
            try:
                close = getattr(self.responses, "close", None)  # a generator's; a plain iterator has none
                if close is not None:
                    close()
            finally:
                grpc_request_finished.send(sender=self.sender)


def _instances(classes: list[type] | None, default_setting: str) -> list:
    """Instantiate ``classes``, or the classes of the ``GRPC_FRAMEWORK`` default when they are ``None``."""
    if classes is None:
        classes = getattr(grpc_ext_settings, default_setting)
    return [cls() for cls in classes]


def _report_unexpected(sender, request, context: grpc.ServicerContext, exc: Exception) -> None:
    """Send ``grpc_got_request_exception`` for an error no status is mapped to, as Django does for a 500."""
    try:
        expected = to_grpc_error(exc) is not None
    except Exception:
        expected = False
    if not expected:
        grpc_got_request_exception.send(sender=sender, request=request, context=context, exception=exc)


class GenericService(Service):
    """Look objects up by a key that is checked before the query runs.

    ``prepared_lookup``: compile the key lookup's SQL once per service class
    and reuse it (``grpc_ext.lookups``); it is used only for calls whose
    queryset has the same filter as the one it was compiled from, so it is
    safe with a ``get_queryset`` that depends on the request. Set it to
    ``False`` to build every lookup with ``queryset.get()``.
    """

    prepared_lookup: bool = True

    @classmethod
    def get_prepared_lookups(cls) -> PreparedLookups:
        """Return this class's prepared lookups (each subclass has its own)."""
        if "_prepared_lookups" not in cls.__dict__:
            cls._prepared_lookups = PreparedLookups()
        return cls._prepared_lookups

    def get_object(self):
        """Return the object named by the request's key; INVALID_ARGUMENT or NOT_FOUND otherwise."""
        queryset = self.filter_queryset(self.get_queryset())
        model = queryset.model
        lookup_field = self.lookup_field or model._meta.pk.name
        request_field = self.lookup_request_field or lookup_field
        raw_value = getattr(self.request, request_field)
        try:
            value = model._meta.get_field(lookup_field).to_python(raw_value)
        except ValidationError:
            value = None
        if value in (None, ""):
            raise InvalidArgument(
                f"{request_field}: {excerpt(raw_value)} is not a valid {model.__name__} key.",
                field_errors={request_field: [f"{excerpt(raw_value)} is not a valid key."]},
            )
        try:
            if self.prepared_lookup:
                obj = self.get_prepared_lookups().get(queryset, lookup_field, value)
            else:
                obj = queryset.get(**{lookup_field: value})
        except model.DoesNotExist:
            raise NotFound(f"{model.__name__} {value} not found.") from None
        self.check_object_permissions(obj)
        return obj


class ModelService(
    writes.IdempotentCreateMixin,
    writes.ETagMixin,
    writes.BatchCreateModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.PartialUpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    mixins.StreamModelMixin,
    GenericService,
):
    """List (paged), Stream, Retrieve, Create, BatchCreate, Update, PartialUpdate and Destroy.

    Creates take a ``request_id`` (AIP-155); Update, PartialUpdate and Destroy an ``etag`` (AIP-154).
    """
