"""CLIENT spans for ``grpc_ext.client``: each call in a span, its W3C ``traceparent`` sent in the metadata.

On when a tracer provider is configured (``opentelemetry.trace.set_tracer_provider``,
or ``tracer_provider=`` given to the client), so that a Python caller's trace
continues into the server. Like the client, this module needs no Django, and
no OpenTelemetry either unless tracing is wanted: it is imported lazily.

Not ``opentelemetry-instrumentation-grpc``'s client interceptors (0.66b1),
which were tried with the client: for a response stream they return a
generator in place of grpc's call object, so the client's ``call.cancel()``
(how it stops a Stream it no longer reads) fails, and a closed generator
leaves the call running on the server until its deadline. These are grpc's
own interceptor interfaces; the call object is passed through untouched and
the span ends when the call does (``add_done_callback``).
"""

from __future__ import annotations

import asyncio
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

#: The instrumentation scope of the client's spans.
SCOPE = "grpc_ext.client"


def client_tracer(tracer_provider: Any = None) -> Any:
    """Return a tracer of ``tracer_provider``, else of the global provider once one is configured; else ``None``."""
    try:
        from opentelemetry import trace
    except ImportError:  # the client without OpenTelemetry installed: no spans
        return None
    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
        if isinstance(tracer_provider, trace.ProxyTracerProvider):  # nothing configured
            return None
    return tracer_provider.get_tracer(SCOPE)


class _CallSpans:
    """Start a call's CLIENT span, named as the server's (``posts.PostController/Retrieve``), and end it."""

    def __init__(self, tracer: Any):
        self.tracer = tracer

    def start(
        self, method: str | bytes, metadata: Sequence[tuple[str, Any]] | None
    ) -> tuple[Any, list[tuple[str, Any]]]:
        """Return the new span and the call's metadata with its ``traceparent`` (and ``tracestate``) added."""
        from opentelemetry import propagate, trace

        path = method.decode() if isinstance(method, bytes) else method
        service, _, name = path.lstrip("/").rpartition("/")
        span = self.tracer.start_span(
            f"{service}/{name}",
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, [*(metadata or ()), *carrier.items()]

    @staticmethod
    def end(span: Any, code: grpc.StatusCode | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        code = code or grpc.StatusCode.UNKNOWN
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()


class _CallDetails(
    namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class TracingClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Put every unary and response-streaming call of a channel in a CLIENT span (``grpc.intercept_channel``)."""

    def __init__(self, tracer: Any):
        self.spans = _CallSpans(tracer)

    def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        span, metadata = self.spans.start(details.method, details.metadata)
        traced = _CallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )
        try:
            call = continuation(traced, request)
        except BaseException:
            self.spans.end(span, grpc.StatusCode.UNKNOWN)
            raise
        call.add_done_callback(lambda done: self.spans.end(span, done.code()))
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request)


class AsyncTracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """The grpc.aio twin of ``TracingClientInterceptor`` (``interceptors=`` of a ``grpc.aio`` channel)."""

    def __init__(self, tracer: Any):
        self.spans = _CallSpans(tracer)
        self._ending: set[asyncio.Task[Any]] = set()

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        span, metadata = self.spans.start(details.method, details.metadata)
        traced = grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )
        try:
            call = await continuation(traced, request)
        except BaseException:
            self.spans.end(span, grpc.StatusCode.UNKNOWN)
            raise
        call.add_done_callback(lambda done: self._end_later(span, done))
        return call

    def _end_later(self, span: Any, call: Any) -> None:
        # grpc.aio's code() is a coroutine; the call is done, so it answers at once.
        task = asyncio.ensure_future(self._end(span, call))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _end(self, span: Any, call: Any) -> None:
        self.spans.end(span, await call.code())

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)
