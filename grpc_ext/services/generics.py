"""Service base classes and the request cycle: the framework's, with one error contract and a route you can read.

``Service.as_servicer`` replaces the framework's: that one sent
``grpc_request_finished`` (which closes the database connection) before a
streaming handler had produced anything, and let every exception end the RPC
as UNKNOWN with a Python repr as its message. Here every call goes through a
``RequestCycle`` (``Service.request_cycle_class``): its errors through
``grpc_ext.exceptions.abort_with_error``, the one place that maps them to
status codes, and the request-finished signal fires when the response,
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


class RequestCycle:
    """The life of one call of ``service_class.action``, in named steps a subclass may override.

    As DRF's ``APIView.dispatch`` -> ``initial`` -> handler ->
    ``handle_exception`` -> ``finalize_response``, the route of a gRPC call::

        server (event loop)        grpc.aio or pygrpc-native: HTTP/2, interceptors, the request message
          unary / stream           on the loop: the context becomes a CallContext
            in_pool  ---------->   one hop to the bounded pool (a stream: one per message)
              run_unary / next_batch
                start              request_started -> check_call (database, deadline)
                                   -> get_service -> Service.initial (authentication, permissions, throttles)
                                   -> perform_action: the action (``mixins``), reading and writing
                                      messages through the service's codec (``grpc_ext.wire``)
                handle_exception   any error -> one Status (``exceptions``' error map)
                request_finished
            <---------------  (response, status)
          respond                  write the message, or abort with the status and its rich details

    The Connect and gRPC-Web endpoints (``grpc_ext.gateway.connect``) run
    ``run_unary`` and ``next_batch`` in the web server's thread. Both pass a
    ``CallContext``, so the service sees the same ``context`` either way.
    Override a step in a subclass and name it in ``Service.request_cycle_class``.
    """

    def __init__(self, service_class: type[Service], action: str, initkwargs: dict):
        self.service_class = service_class
        self.action = action
        self.initkwargs = initkwargs
        self.streaming = inspect.isgeneratorfunction(getattr(service_class, action))

    def handler(self):
        """Return the ``grpc.aio`` handler of the action: ``stream`` for a response stream, ``unary`` otherwise."""
        return self.stream if self.streaming else self.unary

    # On the event loop ---------------------------------------------------------------------

    async def unary(self, request, context: grpc.aio.ServicerContext):
        """Serve a unary call: one hop to the pool for the whole Django half, then ``respond``."""
        call = CallContext(context)
        response, status = await in_pool(call, self.run_unary, request, call)
        return await self.respond(context, response, status)

    async def stream(self, request, context: grpc.aio.ServicerContext):
        """Serve a response stream: a hop per message (``next_batch``), each written from the loop.

        A client that stops reading holds no thread; a stream that ends early
        (cancelled, or stopped by a drain) is closed on the pool after the hop in hand.
        """
        call = CallContext(context)
        stream = StreamState(self.service_class)
        try:
            while True:
                response, status = await in_pool(call, self.next_batch, stream, request, call)
                response = await self.respond(context, response, status)
                if response is None:
                    return
                yield response
        finally:
            if not stream.finished:
                loop = asyncio.get_running_loop()
                loop.run_in_executor(serving_pool(loop), stream.close)

    async def respond(self, context: grpc.aio.ServicerContext, response, status: Status | None):
        """Return ``response`` to be written, or end the call with ``status`` (code, message, rich details)."""
        if status is not None:
            await context.abort(status.code, status.details, status.trailing_metadata)
        return response

    # On the pool (or the web server's thread) ----------------------------------------------

    def run_unary(self, request, call: CallContext) -> tuple[object, Status | None]:
        """Run a unary call whole; return its response, or ``None`` and the status it failed with."""
        try:
            return self.start(request, call), None
        except Exception as exc:
            return None, self.handle_exception(exc, request, call)
        finally:
            self.request_finished()

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
                return None, self.handle_exception(exc, request, call)
            finally:
                if response is None:
                    stream.finished = True
                    self.request_finished()
                else:
                    close_old_connections()

    def start(self, request, call: CallContext):
        """Check the call and the caller, then run the action; return its response (a stream: its iterator)."""
        self.request_started(request, call)
        self.check_call(call)
        service = self.get_service(request, call)
        service.initial()
        return self.perform_action(service, request, call)

    def request_started(self, request, call: CallContext) -> None:
        """Send ``grpc_request_started`` (Django's per-request housekeeping: queries log, stale connections)."""
        grpc_request_started.send(sender=self.service_class, request=request, context=call)

    def check_call(self, call: CallContext) -> None:
        """Check the database connection (at most once per interval) and that the deadline has not passed."""
        prepare_database(call)
        check_deadline(call)

    def get_service(self, request, call: CallContext) -> Service:
        """Return a new service object for this call, as DRF builds a view per request."""
        service = self.service_class(**self.initkwargs)
        service.request, service.context, service.action = request, call, self.action
        return service

    def perform_action(self, service: Service, request, call: CallContext):
        """Run the RPC method (``Retrieve``, ``List``...); its return value is the response (a stream: an iterator)."""
        return getattr(service, self.action)(request, call)

    def handle_exception(self, exc: Exception, request, call: CallContext) -> Status | None:
        """Return the status ``exc`` ends the call with, the handler's own ``abort`` included."""
        if not isinstance(exc, RpcAborted):
            # A CallContext answers as grpc's ServicerContext does (abort, set_code, trailing metadata).
            _report_unexpected(self.service_class, request, cast(grpc.ServicerContext, call), exc)
            try:
                abort_with_error(exc, cast(grpc.ServicerContext, call))
            except RpcAborted:
                pass
        return call.status

    def request_finished(self) -> None:
        """Send ``grpc_request_finished`` (closes the connections Django closes after a request)."""
        grpc_request_finished.send(sender=self.service_class)


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
    #: The steps of every call of this service (``RequestCycle``); a subclass of it overrides one.
    request_cycle_class: type[RequestCycle] = RequestCycle

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
        """Return a servicer object for ``add_<Name>Servicer_to_server``: one ``request_cycle_class`` per RPC.

        The framework's ``as_servicer`` still checks ``initkwargs`` and guards
        the class queryset; its servicer object is not used, since its handlers
        are the ones this class replaces.
        """
        framework_generics.GenericService.as_servicer.__func__(cls, **initkwargs)

        class Servicer:
            def __getattr__(self, action):
                if not hasattr(cls, action):
                    return cls._make_unimplemented_handler(action)
                return cls.request_cycle_class(cls, action, initkwargs).handler()

        update_wrapper(Servicer, cls, updated=())
        return Servicer()

    @classmethod
    def _make_unimplemented_handler(cls, action: str):
        """Answer UNIMPLEMENTED for an RPC of the proto that the service does not define."""

        async def unimplemented(request, context):
            await abort_with_error_async(Unimplemented(f"{cls.__name__} does not implement {action}."), context)

        return unimplemented


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
