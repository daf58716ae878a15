"""The wire contract of requests: bytes that do not decode are INVALID_ARGUMENT, naming the request type.

grpc.aio and pygrpc-native decode a request with the method's deserializer
and end the call UNKNOWN or INTERNAL, with the exception's class and text in
the message, when it raises. Every method the server registers gets a
deserializer that never raises (``lenient_deserializer``): bytes that do not
decode become an ``UndecodableRequest``, and the first code of this layer to
see one (``read_request``, ``reject_undecodable``, ``checked_requests``)
ends the call INVALID_ARGUMENT with a short message. The same path serves
every service (ours, authentication, health, reflection) on both transports.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool

from grpc_ext.exceptions import InvalidArgument, abort_with_error_async
from grpc_ext.server.handlers import rebuild

logger = logging.getLogger(__name__)


class UndecodableRequest:
    """What a lenient deserializer returns for bytes that are not a valid ``type_name``."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"The request is not a valid {self.type_name}.")


def request_type_name(deserializer: Callable[[bytes], Any]) -> str:
    """Return the full name of the message ``deserializer`` decodes (``Message.FromString``), else ``message``."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", None) or "message"


def lenient_deserializer(
    deserializer: Callable[[bytes], Any] | None, type_name: str | None = None
) -> Callable[[bytes], Any] | None:
    """Return ``deserializer`` made to return an ``UndecodableRequest`` where it would raise.

    ``type_name`` is the request type the message names (by default, the one ``deserializer`` decodes).
    """
    if deserializer is None or getattr(deserializer, "lenient", False):
        return deserializer
    undecodable = UndecodableRequest(type_name or request_type_name(deserializer))

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            logger.debug("A request is not a valid %s", undecodable.type_name, exc_info=True)
            return undecodable

    decode.lenient = True  # type: ignore[attr-defined]  # marks a deserializer already wrapped
    return decode


async def reject_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    """End the call INVALID_ARGUMENT if ``request`` did not decode; return otherwise."""
    if isinstance(request, UndecodableRequest):
        await abort_with_error_async(request.error(), context)


async def checked_requests(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """Yield the messages of a request stream, ending the call INVALID_ARGUMENT at the first that did not decode."""
    async for request in requests:
        await reject_undecodable(request, context)
        yield request


def _with_checked_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Return a unary-request behaviour that rejects an undecodable request before ``behavior`` sees it."""
    if inspect.isasyncgenfunction(behavior):

        async def checked_stream(request, context):
            await reject_undecodable(request, context)
            async for response in behavior(request, context):
                yield response

        return checked_stream
    if inspect.iscoroutinefunction(behavior):

        async def checked(request, context):
            await reject_undecodable(request, context)
            return await behavior(request, context)

        return checked

    if inspect.isgeneratorfunction(behavior):  # a plain servicer's stream, run on the loop as grpc.aio does

        async def checked_plain_stream(request, context):
            await reject_undecodable(request, context)
            for response in behavior(request, context):
                yield response

        return checked_plain_stream

    async def checked_plain(request, context):
        await reject_undecodable(request, context)
        return behavior(request, context)

    return checked_plain


def _with_checked_requests(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Return a request-streaming behaviour whose request iterator rejects an undecodable message."""
    if inspect.isasyncgenfunction(behavior):

        async def checked_stream(request_iterator, context):
            async for response in behavior(checked_requests(request_iterator, context), context):
                yield response

        return checked_stream
    if inspect.iscoroutinefunction(behavior):

        async def checked(request_iterator, context):
            return await behavior(checked_requests(request_iterator, context), context)

        return checked
    # A synchronous behaviour iterates its requests in a thread; its handler is left as it is.
    return behavior


def method_input_type(path: str) -> str | None:
    """Return the full name of the request type of ``/service/Method`` in the generated descriptors, if any."""
    service, _, method = path.strip("/").partition("/")
    try:
        return descriptor_pool.Default().FindMethodByName(f"{service}.{method}").input_type.full_name
    except KeyError:
        return None


def guard_decoding(handler: grpc.RpcMethodHandler, path: str = "") -> grpc.RpcMethodHandler:
    """Return ``handler`` with a lenient deserializer and a behaviour that answers an undecodable request.

    ``path`` (``/service/Method``) names the request type from the descriptors,
    which the deserializer may not (reflection v1 decodes v1alpha's messages).
    Unary requests are checked when the behaviour starts; request streams
    message by message, as the servicer reads them.
    """
    deserializer = lenient_deserializer(handler.request_deserializer, method_input_type(path) if path else None)
    if deserializer is handler.request_deserializer:
        return handler

    def check(kind: str, behavior: Callable) -> Callable:
        return _with_checked_requests(behavior) if kind.startswith("stream_") else _with_checked_request(behavior)

    return rebuild(handler, check, deserializer)
