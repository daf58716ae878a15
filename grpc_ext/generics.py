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

import inspect
from collections.abc import Iterator
from functools import update_wrapper

import grpc
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django_grpc_framework import generics as framework_generics

from grpc_ext import mixins
from grpc_ext.exceptions import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unimplemented,
    abort_with_error,
    to_grpc_error,
)
from grpc_ext.lookups import PreparedLookups
from grpc_ext.settings import grpc_ext_settings
from grpc_ext.signals import grpc_got_request_exception, grpc_request_finished, grpc_request_started
from grpc_ext.throttling import client_request


def _already_aborted(context: grpc.ServicerContext) -> bool:
    """Tell whether the handler itself called ``context.abort``."""
    return context.code() not in (None, grpc.StatusCode.OK)


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

    def initial(self) -> None:
        """Identify the caller, then check permissions and rate limits, before the handler runs."""
        self.perform_authentication()
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
        request = client_request(self)
        waits = [throttle.wait() for throttle in self.get_throttles() if not throttle.allow_request(request, self)]
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

        def unimplemented(request, context):
            abort_with_error(Unimplemented(f"{cls.__name__} does not implement {action}."), context)

        return unimplemented

    @classmethod
    def _make_handler(cls, action: str, initkwargs: dict):
        streaming = inspect.isgeneratorfunction(getattr(cls, action))

        def run(request, context):
            service = cls(**initkwargs)
            service.request, service.context, service.action = request, context, action
            service.initial()
            return getattr(service, action)(request, context)

        def unary_handler(request, context):
            grpc_request_started.send(sender=cls, request=request, context=context)
            try:
                return run(request, context)
            except Exception as exc:
                if _already_aborted(context):
                    raise
                _report_unexpected(cls, request, context, exc)
                abort_with_error(exc, context)
            finally:
                grpc_request_finished.send(sender=cls)

        def stream_handler(request, context) -> Iterator:
            grpc_request_started.send(sender=cls, request=request, context=context)
            try:
                yield from run(request, context)
            except Exception as exc:
                if _already_aborted(context):
                    raise
                _report_unexpected(cls, request, context, exc)
                abort_with_error(exc, context)
            finally:
                grpc_request_finished.send(sender=cls)

        return stream_handler if streaming else unary_handler


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
                f"{request_field}: {raw_value!r} is not a valid {model.__name__} key.",
                field_errors={request_field: [f"{raw_value!r} is not a valid key."]},
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
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.PartialUpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    mixins.StreamModelMixin,
    GenericService,
):
    """List (paged), Stream, Retrieve, Create, Update, PartialUpdate and Destroy."""
