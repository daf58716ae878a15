"""Limits a client cannot escape: how long a request may take to arrive, and how a drain ends calls.

gRPC's wire format does not tell a unary request from a client stream of one
message, so every unary-request method is registered as a stream-request
method whose handler reads the one message itself, on the event loop, within
``REQUEST_TIMEOUT`` seconds. A client that sends headers and no message costs
a coroutine for that long, never a thread.

``DrainGate`` (the first interceptor) counts the calls in flight and, once a
drain begins, answers new calls UNAVAILABLE in this layer while grpc keeps
serving the accepted ones: grpcio's own shutdown would answer CANCELLED to
calls that arrived but were not yet handled (grpc/grpc issue 41785).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc

from grpc_ext.exceptions import DeadlineExceeded, InvalidArgument, Unavailable, abort_with_error_async
from grpc_ext.server.calls import deadline_remaining
from grpc_ext.server.handlers import rebuild
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)


async def read_request(context: grpc.aio.ServicerContext):
    """Return the call's one request message, or abort if it does not arrive within ``REQUEST_TIMEOUT``."""
    timeout = grpc_ext_settings.REQUEST_TIMEOUT
    try:
        async with asyncio.timeout(timeout):
            request = await context.read()
    except TimeoutError:
        await abort_with_error_async(
            DeadlineExceeded(f"The request message did not arrive within {timeout:g} s of the call's headers."),
            context,
        )
    if request is grpc.aio.EOF:
        await abort_with_error_async(InvalidArgument("The call ended without a request message."), context)
    return request


def bounded_request(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its unary request read by ``read_request``; request streams are left as they are."""
    if handler.request_streaming:
        return handler
    behavior: Any = handler.unary_stream if handler.response_streaming else handler.unary_unary

    async def bounded_async_stream(request_iterator, context):
        async for response in behavior(await read_request(context), context):
            yield response

    async def bounded_coroutine(request_iterator, context):
        return await behavior(await read_request(context), context)

    async def bounded_stream(request_iterator, context):
        for response in behavior(await read_request(context), context):
            yield response

    async def bounded_function(request_iterator, context):
        return behavior(await read_request(context), context)

    bounded: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):
        bounded = bounded_async_stream
    elif inspect.iscoroutinefunction(behavior):
        bounded = bounded_coroutine
    elif inspect.isgeneratorfunction(behavior):  # a plain servicer's default; run on the loop, as grpc.aio does
        bounded = bounded_stream
    else:
        bounded = bounded_function

    make = grpc.stream_stream_rpc_method_handler if handler.response_streaming else grpc.stream_unary_rpc_method_handler
    return make(bounded, handler.request_deserializer, handler.response_serializer)


def wrap_handler(handler: grpc.RpcMethodHandler, wrap_unary: Callable, wrap_stream: Callable) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its behaviour wrapped, keeping its kind and (de)serializers.

    ``wrap_unary`` gets the behaviour of a unary-response method, ``wrap_stream``
    that of a response stream (an async generator, or a coroutine that calls
    ``context.write``) and must return the same kind.
    """
    return rebuild(handler, lambda kind, behavior: (wrap_stream if kind.endswith("_stream") else wrap_unary)(behavior))


def observe_handler(
    handler: grpc.RpcMethodHandler,
    begin: Callable[[Any], Any],
    end: Callable[[Any, Any, BaseException | None], None],
) -> grpc.RpcMethodHandler:
    """Return ``handler`` with ``begin(context)`` called as the call is handled and ``end(context, begun, exc)``
    when it ends (``begun``: what ``begin`` returned; ``exc``: what the handler raised, ``None`` if it returned).

    The one wrapper of the interceptors that watch calls (access log, metrics), for every kind of method.
    """

    def wrap_unary(behavior):
        async def observed(request, context):
            begun, error = begin(context), None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                end(context, begun, error)

        return observed

    def wrap_stream(behavior):
        if not inspect.isasyncgenfunction(behavior):
            return wrap_unary(behavior)

        async def observed(request, context):
            begun, error = begin(context), None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                end(context, begun, error)

        return observed

    return wrap_handler(handler, wrap_unary, wrap_stream)


#: An interceptor's wrapped handlers, by method: (the handler it wrapped, the wrapper).
WrappedHandlers = dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]]


def wrapped_once(
    cache: WrappedHandlers, method: str, handler: grpc.RpcMethodHandler, wrap: Callable[[], grpc.RpcMethodHandler]
) -> grpc.RpcMethodHandler:
    """Return ``method``'s wrapper of ``handler`` from ``cache``, built by ``wrap()`` once per method, not per call.

    Built again only if the method's handler is another object than the one wrapped.
    """
    cached = cache.get(method)
    if cached is None or cached[0] is not handler:
        cached = cache[method] = (handler, wrap())
    return cached[1]


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that watches every call of a method with the ``begin`` and ``end`` of ``observers(method)``.

    The watched handler (``observe_handler``) is built once per method, not
    for each call. Subclasses: the access log, the metrics.
    """

    def __init__(self) -> None:
        self._observed: WrappedHandlers = {}

    def observers(self, method: str) -> tuple[Callable[[Any], Any], Callable[[Any, Any, BaseException | None], None]]:
        """Return ``begin(context)`` and ``end(context, begun, exc)`` for the calls of ``method``."""
        raise NotImplementedError

    def observing(self) -> bool:
        """Tell whether calls are watched now (the access log: while its logger is on)."""
        return True

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not self.observing():
            return handler
        method = handler_call_details.method
        return wrapped_once(self._observed, method, handler, lambda: observe_handler(handler, *self.observers(method)))


#: How much later the server's deadline may run out than the client's, which started before the headers were sent.
DEADLINE_SKEW = 0.25


def outcome_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    """Return the status code the client got for a call whose handler ended with ``exc`` (``None``: returned).

    A call the client cancelled is CANCELLED, one whose deadline passed
    DEADLINE_EXCEEDED, even when the handler went on and returned.
    """
    code = context.code()
    if isinstance(code, int):  # grpc.aio keeps the numeric code after abort
        code = next((status for status in grpc.StatusCode if status.value[0] == code), grpc.StatusCode.UNKNOWN)
    if code not in (None, grpc.StatusCode.OK):
        return code
    remaining = deadline_remaining(context)
    expired = remaining is not None and remaining <= 0
    if isinstance(exc, asyncio.CancelledError | GeneratorExit) or context.cancelled():
        # The client's own deadline fires first and resets the stream; the server's copy of the
        # deadline started when the headers arrived, so it still shows a little time left.
        nearly_expired = remaining is not None and remaining <= DEADLINE_SKEW
        return grpc.StatusCode.DEADLINE_EXCEEDED if nearly_expired else grpc.StatusCode.CANCELLED
    if exc is None:
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.OK
    return grpc.StatusCode.UNKNOWN


#: Longest a call refused during a drain waits for grpc's shutdown to begin before it is answered (seconds).
REFUSAL_HOLD = 1.0


class DrainGate(grpc.aio.ServerInterceptor):
    """Track the calls in flight; once ``close`` is called, answer new calls UNAVAILABLE."""

    def __init__(self) -> None:
        self.accepting = True
        self.expired = False
        self.calls: set[asyncio.Task] = set()
        self._idle: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._refusal: grpc.RpcMethodHandler = grpc.stream_unary_rpc_method_handler(self._refuse)
        # For a unary request, which the native transport has read in full before the call is handed over
        # (and where a request-streaming handler cannot answer a unary call).
        self._unary_refusal: grpc.RpcMethodHandler = grpc.unary_unary_rpc_method_handler(self._refuse_unary)
        self._tracked: WrappedHandlers = {}

    async def _refuse(self, request_iterator, context) -> None:
        """Answer a call that arrived during the drain UNAVAILABLE: when grpc's shutdown begins, or after a second.

        While held, the call is one grpc has handed over, and its client sends
        no other on that call: a call grpc has received but not handed over
        when its shutdown begins ends CANCELLED (grpc issue 41785). The request
        is read first: a status sent while the client still sends is followed
        by a stream reset the client may see first, as CANCELLED.
        """
        try:
            async with asyncio.timeout(grpc_ext_settings.REQUEST_TIMEOUT):
                await context.read()
        except TimeoutError:
            pass
        await self._refuse_unary(None, context)

    async def _refuse_unary(self, request, context) -> None:
        """Answer a call whose request has arrived UNAVAILABLE, when grpc's shutdown begins or after a second."""
        released = self._released
        try:
            async with asyncio.timeout(REFUSAL_HOLD):
                if released is not None:  # set by close(), before any call is refused
                    await released.wait()
        except TimeoutError:
            pass
        await abort_with_error_async(Unavailable("The server is shutting down; retry on another connection."), context)

    async def intercept_service(self, continuation, handler_call_details):
        if not self.accepting:
            handler = await continuation(handler_call_details)
            return self._refusal if handler is None or handler.request_streaming else self._unary_refusal
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        # The tracking wrapper depends on the handler only: built once per method, not per call.
        return wrapped_once(
            self._tracked,
            handler_call_details.method,
            handler,
            lambda: wrap_handler(handler, self._track_unary, self._track_stream),
        )

    def _enter(self) -> asyncio.Task:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("A call is tracked from outside an asyncio task.")
        self.calls.add(task)
        return task

    def _leave(self, task: asyncio.Task) -> None:
        self.calls.discard(task)
        if not self.calls and self._idle is not None:
            self._idle.set()

    async def _expired(self, context) -> None:
        await abort_with_error_async(Unavailable("The server shut down before the call finished; retry it."), context)

    def _track_unary(self, behavior):
        async def tracked(request, context):
            task = self._enter()
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                if self.expired:
                    await self._expired(context)
                raise
            finally:
                self._leave(task)

        return tracked

    def _track_stream(self, behavior):
        if inspect.isasyncgenfunction(behavior):

            async def tracked(request, context):
                task = self._enter()
                try:
                    async for response in behavior(request, context):
                        yield response
                except asyncio.CancelledError:
                    if self.expired:
                        await self._expired(context)
                    raise
                finally:
                    self._leave(task)

            return tracked
        return self._track_unary(behavior)

    def close(self) -> None:
        """Refuse every call from now on; the ones in flight go on (called on the event loop)."""
        self._released = asyncio.Event()
        self.accepting = False

    def release(self) -> None:
        """Answer the refused calls: grpc's shutdown has begun."""
        if self._released is not None:
            self._released.set()

    async def wait_idle(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for the calls in flight to end; tell whether they all did."""
        if not self.calls:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    async def expire(self, timeout: float) -> None:
        """End the calls still in flight with UNAVAILABLE, and wait up to ``timeout`` seconds for them."""
        self.expired = True
        for task in list(self.calls):
            task.cancel()
        await self.wait_idle(timeout)
