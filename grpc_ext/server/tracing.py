"""OpenTelemetry traces of every call: a SERVER span per RPC, a span per SQL statement, trace ids in the logs.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
is set (and ``OTEL_SDK_DISABLED`` is not ``true``); then the OpenTelemetry
SDK is configured from the standard variables alone: ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``,
the OTLP specification's default, or ``grpc``), ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``.

A call's route through the spans::

    client CLIENT span (grpc_ext.client)  --traceparent-->
      SERVER span "posts.PostController/Retrieve"   (TracingInterceptor, on the event loop)
        the hop to the pool copies the context   (grpc_ext.server.calls.in_pool)
        CLIENT span "SELECT posts_post"          (trace_statement, a Django execute wrapper)
      log records of the call carry trace_id and span_id (grpc_ext.server.trace_logging)

The SDK is configured in the process that serves (``configure_tracing``, from
``TracingInterceptor`` when a server is built, after ``--workers`` forks; from
``configure_web_tracing`` in the WSGI/ASGI entry points), never in a parent
that forks: the OTLP/gRPC exporter's channel must not cross a fork.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing.util
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import grpc
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from grpc_ext.server.limits import WrappedHandlers, outcome_code, wrap_handler, wrapped_once

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
#: The OTLP specification's default. Not ``grpc``, the Python SDK's: the exporter's grpcio channel, in a
#: process whose grpc.aio server serves the calls, cost that server 50-120 us more CPU per Retrieve than
#: the HTTP exporter, sampled or not (``manage.py benchmark --tracing-only --tracing-protocol grpc``).
DEFAULT_PROTOCOL = "http/protobuf"
#: The contrib gRPC instrumentation's variable: services whose calls get no span (e.g. ``grpc.health.v1.Health``).
EXCLUDED_SERVICES_VARIABLE = "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES"
#: The instrumentation scope of every span this layer makes.
SCOPE = "grpc_ext"
#: Attribute of a response stream's span: how many messages (batches of rows) it sent.
STREAM_BATCHES = "grpc_ext.stream.batches"
#: Longest ``db.statement`` kept; a BatchCreate's INSERT of 1,000 rows is tens of kB of placeholders.
MAX_STATEMENT_LENGTH = 4096

_configured = False
_lock = threading.Lock()


def tracing_enabled() -> bool:
    """Tell whether the environment turns tracing on: an OTLP endpoint is set and the SDK is not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def span_exporter() -> Any:
    """Return the OTLP exporter of ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``, set up by the SDK from the environment."""
    given = (os.environ.get(name, "").strip() for name in PROTOCOL_VARIABLES)
    protocol = next((value for value in given if value), DEFAULT_PROTOCOL)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter()
    raise ImproperlyConfigured(
        f"OTEL_EXPORTER_OTLP_PROTOCOL is {protocol!r}; traces are exported over 'grpc' or 'http/protobuf'."
    )


def configure_tracing() -> bool:
    """Install the SDK's tracer provider with a batching OTLP exporter, once per process; return whether tracing is on.

    The sampler, resource and batch settings are the SDK's own readings of the
    ``OTEL_*`` variables. The provider is shut down (its last spans sent) when
    the process exits, a ``--workers`` child included: multiprocessing ends
    those with ``os._exit``, past ``atexit``, so the shutdown is one of its finalizers.
    """
    global _configured
    if not tracing_enabled():
        return False
    with _lock:
        if _configured:
            return True
        from django.db.backends.signals import connection_created
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create(), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(span_exporter()))
        trace.set_tracer_provider(provider)
        multiprocessing.util.Finalize(None, provider.shutdown, exitpriority=10)
        connection_created.connect(trace_statements, dispatch_uid="grpc_ext_trace_statements")
        _configured = True
        logger.info("Tracing on: spans are exported over OTLP")
        return True


def configure_web_tracing() -> bool:
    """Configure tracing for the web process (REST, admin): Django's instrumentation makes a SERVER span per request.

    Called by the WSGI and ASGI entry points before the application loads its middleware.
    """
    if not configure_tracing():
        return False
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    instrumentor = DjangoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return True


# --------------------------------------------------------------------------- the RPC's span


def split_method(full_method: str) -> tuple[str, str]:
    """``/posts.PostController/List`` -> ``("posts.PostController", "List")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def excluded_services() -> frozenset[str]:
    """Return the services of ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` (comma-separated full names)."""
    return frozenset(name.strip() for name in os.environ.get(EXCLUDED_SERVICES_VARIABLE, "").split(",") if name.strip())


def _caller_context(context: grpc.aio.ServicerContext, fields: frozenset[str]) -> Any:
    """Return the caller's trace context from the call's metadata (``traceparent``, ``tracestate``, ``baggage``).

    ``fields`` are the metadata keys the propagator reads: a call with none of
    them (most calls of a load balancer or a probe) skips the propagator.
    """
    metadata = context.invocation_metadata() or ()
    if not any(key in fields for key, _ in metadata):
        return None
    return propagate.extract({key: value for key, value in metadata if isinstance(value, str)})


def _peer_attributes(peer: str) -> dict[str, Any]:
    """``ipv4:127.0.0.1:5000`` -> ``network.peer.address`` and ``network.peer.port``; nothing for a Unix socket."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {}
    host, _, port = address.rpartition(":")
    attributes: dict[str, Any] = {"network.peer.address": host.strip("[]")}
    if port.isdigit():
        attributes["network.peer.port"] = int(port)
    return attributes


class _CallSpan:
    """The SERVER span of one call, current on the event loop while the call is handled (and in its pool hops)."""

    __slots__ = ("span", "token", "batches", "connect")

    def __init__(self, tracer: trace.Tracer, name: str, attributes: dict[str, Any], context: Any, fields: frozenset):
        parent = _caller_context(context, fields)
        self.span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        if self.span.is_recording():
            self.span.set_attributes(_peer_attributes(context.peer()))
        self.token = context_api.attach(trace.set_span_in_context(self.span, parent))
        self.batches = 0
        self.connect = attributes.get("rpc.system") == CONNECT_RPC

    def end(self, context: Any, exc: BaseException | None, streaming: bool) -> None:
        self.finish(outcome_code(context, exc) if self.span.is_recording() else grpc.StatusCode.OK, streaming)

    def finish(self, code: grpc.StatusCode, streaming: bool) -> None:
        """Record the code the client got (and a stream's message count), end the span and leave its context."""
        try:
            if self.span.is_recording():
                self.span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    # The code's name only: a status message may quote the request.
                    self.span.set_status(Status(StatusCode.ERROR, code.name))
                    if self.connect:
                        self.span.set_attribute("rpc.connect_rpc.error_code", code.name.lower())
                if streaming:
                    self.span.set_attribute(STREAM_BATCHES, self.batches)
            self.span.end()
        finally:
            try:
                context_api.detach(self.token)
            except Exception:  # a stream abandoned and closed from another thread: its context went with it
                logger.debug("Could not detach a call's trace context", exc_info=True)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Make a SERVER span per RPC, the caller's W3C ``traceparent``/``tracestate`` its parent.

    Named ``<package>.<Service>/<Method>``, with ``rpc.system``, ``rpc.service``,
    ``rpc.method``, ``rpc.grpc.status_code`` (the code the client got, as the
    access log writes it), ``network.peer.*``, ``enduser.id`` once the caller is
    authenticated (``record_user``) and, for a response stream, one span for the
    whole stream with the number of messages sent (``grpc_ext.stream.batches``).
    Every code but OK sets the span's status to ERROR, described by the code's
    name (never the status message, which may quote the request).

    The span is current while the call is handled, so the hop to the thread
    pool (which copies the context) puts the call's SQL spans and log
    records under it. The server adds this interceptor first (after the drain
    gate) when tracing is on, so that the access log and the metrics run inside it.

    Not ``opentelemetry-instrumentation-grpc``'s aio server interceptor
    (0.66b1), which was tried on this server and: names spans with a leading
    slash (``/posts.PostController/Retrieve``); records the status it sees
    passed to ``abort``/``set_code`` only, so a call the client cancelled or
    whose deadline passed is recorded OK; adds two ``exception`` events with a
    traceback to every abort (a NOT_FOUND included); and iterates every
    response-streaming behaviour with ``async for``, which fails for a
    coroutine that writes with ``context.write`` (open-telemetry/opentelemetry-python-contrib#3066).
    Here the behaviours are wrapped by ``grpc_ext.server.limits.wrap_handler``, as the
    access log and the metrics are, and the code comes from ``outcome_code``.
    """

    def __init__(self) -> None:
        configure_tracing()
        self.tracer = trace.get_tracer(SCOPE)
        self.excluded = excluded_services()
        #: The metadata keys the propagator reads (OTEL_PROPAGATORS); lower case, as gRPC metadata keys are.
        self.fields = frozenset(field.lower() for field in propagate.get_global_textmap().fields)
        self._traced: WrappedHandlers = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return wrapped_once(self._traced, method, handler, lambda: self.traced(handler, method))

    def traced(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """Return ``handler`` with a span around each of its calls (``handler`` itself for an excluded service)."""
        service, name = split_method(method)
        if service in self.excluded:
            return handler
        span_name = f"{service}/{name}"
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        tracer, fields = self.tracer, self.fields

        def wrap_unary(behavior: Callable) -> Callable:
            async def traced_unary(request, context):
                call_span, error = _CallSpan(tracer, span_name, attributes, context, fields), None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    call_span.end(context, error, streaming=False)

            return traced_unary

        def wrap_stream(behavior: Callable) -> Callable:
            if not inspect.isasyncgenfunction(behavior):
                return wrap_unary(behavior)

            async def traced_stream(request, context):
                call_span, error = _CallSpan(tracer, span_name, attributes, context, fields), None
                try:
                    async for response in behavior(request, context):
                        call_span.batches += 1
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    call_span.end(context, error, streaming=True)

            return traced_stream

        return wrap_handler(handler, wrap_unary, wrap_stream)


#: ``rpc.system`` of the calls the web process serves over Connect and gRPC-Web (semantic conventions).
CONNECT_RPC = "connect_rpc"


class WebCallTracer:
    """SERVER spans of one RPC served over Connect or gRPC-Web by the web process (``grpc_ext.gateway.connect``).

    The same span as a gRPC call's (``TracingInterceptor``): named
    ``<package>.<Service>/<Method>``, joining the caller's ``traceparent``
    header, current while the request cycle runs (so its SQL spans and log
    records fall under it), with ``rpc.grpc.status_code`` the code the call
    ended with; ``rpc.system`` is ``connect_rpc`` and a failure adds
    ``rpc.connect_rpc.error_code``. Django's own instrumentation does not see
    these calls: they are dispatched in front of Django.
    """

    def __init__(self, service: str, method: str):
        self.tracer = trace.get_tracer(SCOPE)
        self.fields = frozenset(field.lower() for field in propagate.get_global_textmap().fields)
        self.name = f"{service}/{method}"
        self.attributes = {"rpc.system": CONNECT_RPC, "rpc.service": service, "rpc.method": method}

    def start(self, call: Any) -> _CallSpan:
        """Start the span of ``call`` (a ``CallContext``: its metadata are the request's headers)."""
        return _CallSpan(self.tracer, self.name, self.attributes, call, self.fields)


def record_user(user: Any) -> None:
    """Note the authenticated caller's id on the call's span as ``enduser.id``; nothing for an anonymous caller."""
    if user is None or not getattr(user, "is_authenticated", False):
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("enduser.id", str(user.pk))


# --------------------------------------------------------------------------- SQL statements

#: The table a statement reads or writes, for the span's name: ``SELECT ... FROM "posts_post"`` -> ``posts_post``.
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+["`]?([\w.]+)', re.IGNORECASE)


def statement_summary(sql: str) -> tuple[str, str | None]:
    """Return a statement's operation (``SELECT``) and its first table, if one is named."""
    operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    match = _TABLE.search(sql)
    return operation, match.group(1) if match else None


def trace_statement(execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
    """Run a statement in a CLIENT span ``<OPERATION> <table>`` under the current span; a Django execute wrapper.

    The span has ``db.system``, ``db.name``, ``db.operation``, ``db.statement``
    (the SQL with its placeholders; never the parameters) and, for a server,
    ``net.peer.name``/``net.peer.port``. Outside a recorded span (an unsampled
    call, a management command) the statement runs with no span at all.

    Django's execute wrapper, not ``opentelemetry-instrumentation-psycopg2``/``-sqlite3``,
    which were tried: they trace the statement as the driver receives it, and on
    PostgreSQL every statement of a call then begins with the call's
    ``SET LOCAL statement_timeout`` (``grpc_ext.server.calls.StatementTimeout``), so every
    span was named ``SET``. This wrapper comes first, before that prefix is added,
    and serves SQLite and PostgreSQL alike.
    """
    parent = trace.get_current_span()
    if not parent.is_recording():
        return execute(sql, params, many, context)
    connection = context["connection"]
    operation, table = statement_summary(sql)
    settings = connection.settings_dict
    attributes: dict[str, Any] = {
        "db.system": "postgresql" if connection.vendor == "postgresql" else connection.vendor,
        "db.name": str(settings.get("NAME") or ""),
        "db.operation": operation,
        "db.statement": sql[:MAX_STATEMENT_LENGTH],
    }
    if table:
        attributes["db.sql.table"] = table
    if settings.get("HOST"):
        attributes["net.peer.name"] = settings["HOST"]
        if str(settings.get("PORT") or "").isdigit():
            attributes["net.peer.port"] = int(settings["PORT"])
    name = f"{operation} {table}" if table else operation or "SQL"
    span = trace.get_tracer(SCOPE).start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    try:
        return execute(sql, params, many, context)
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.set_attribute("error.type", type(exc).__qualname__)
        raise
    finally:
        span.end()


def trace_statements(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Put ``trace_statement`` first among a connection's execute wrappers (on ``connection_created``).

    First, so that it sees each statement as Django wrote it, before the
    statement timeout's prefix; the list belongs to the thread's
    ``DatabaseWrapper`` and outlives reconnections, hence the check.
    """
    if trace_statement not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, trace_statement)
