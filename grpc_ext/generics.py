"""Service base classes: the framework's, with one error contract and a correct request cycle.

``Service.as_servicer`` replaces the framework's: that one sent
``grpc_request_finished`` (which closes the database connection) before a
streaming handler had produced anything, and let every exception end the RPC
as UNKNOWN with a Python repr as its message. Here each handler's errors go
through ``grpc_ext.exceptions.abort_with_error``, the one place that maps them
to status codes, and the request-finished signal fires when the response,
streamed or not, is complete.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from functools import update_wrapper

import grpc
from django.core.exceptions import ValidationError
from django.db.models.query import QuerySet
from django_grpc_framework import generics as framework_generics

from grpc_ext import mixins
from grpc_ext.exceptions import InvalidArgument, NotFound, abort_with_error, to_grpc_error
from grpc_ext.signals import grpc_got_request_exception, grpc_request_finished, grpc_request_started


def _already_aborted(context: grpc.ServicerContext) -> bool:
    """Tell whether the handler itself called ``context.abort``."""
    return context.code() not in (None, grpc.StatusCode.OK)


class Service(framework_generics.GenericService):
    """A generic service whose servicer maps every error to a gRPC status."""

    @classmethod
    def as_servicer(cls, **initkwargs):
        """Return a servicer object for ``add_<Name>Servicer_to_server``."""
        for key in initkwargs:
            if not hasattr(cls, key):
                raise TypeError(
                    f"{cls.__name__}() received an invalid keyword {key!r}. as_servicer only "
                    "accepts arguments that are already attributes of the class."
                )
        if isinstance(getattr(cls, "queryset", None), QuerySet):
            cls.queryset._fetch_all = _forbid_evaluating_class_queryset

        class Servicer:
            def __getattr__(self, action):
                if not hasattr(cls, action):
                    raise AttributeError(action)
                handler = cls._make_handler(action, initkwargs)
                update_wrapper(handler, getattr(cls, action))
                return handler

        update_wrapper(Servicer, cls, updated=())
        return Servicer()

    @classmethod
    def _make_handler(cls, action: str, initkwargs: dict):
        streaming = inspect.isgeneratorfunction(getattr(cls, action))

        def run(request, context):
            service = cls(**initkwargs)
            service.request, service.context, service.action = request, context, action
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


def _report_unexpected(sender, request, context: grpc.ServicerContext, exc: Exception) -> None:
    """Send ``grpc_got_request_exception`` for an error no status is mapped to, as Django does for a 500."""
    try:
        expected = to_grpc_error(exc) is not None
    except Exception:
        expected = False
    if not expected:
        grpc_got_request_exception.send(sender=sender, request=request, context=context, exception=exc)


def _forbid_evaluating_class_queryset():
    raise RuntimeError(
        "Do not evaluate the `.queryset` attribute directly, as the result would be "
        "cached and reused between requests. Use `.all()` or call `.get_queryset()`."
    )


class GenericService(Service):
    """Look objects up by a key that is checked before the query runs."""

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
            return queryset.get(**{lookup_field: value})
        except model.DoesNotExist:
            raise NotFound(f"{model.__name__} {value} not found.") from None


class ModelService(
    mixins.CreateModelMixin,
    framework_generics.mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.PartialUpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    mixins.StreamModelMixin,
    GenericService,
):
    """List (paged), Stream, Retrieve, Create, Update, PartialUpdate and Destroy."""
