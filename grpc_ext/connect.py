"""Every gRPC service over the Connect protocol and gRPC-Web, from the web process (connectrpc).

Browsers cannot speak gRPC (no trailers, no HTTP/2 control); the Connect
protocol (JSON or binary, unary and server streaming) and gRPC-Web can be
spoken over plain HTTP/1.1 or HTTP/2, by ``@connectrpc/connect-web``, curl or
any HTTP client. connectrpc's WSGI application speaks both; this module gives
it one endpoint per RPC of every service the gRPC server serves
(``grpc_ext.discovery``: a new app needs nothing more), at the standard path
``/<package>.<Service>/<Method>``, and mounts it as a Django view
(``urlpatterns``), so that ``runserver`` and gunicorn serve it with the rest
of the site, behind the same middleware (CORS, allowed hosts, HTTPS).

The gRPC handlers and these endpoints are two faces of one service class:
both drive ``grpc_ext.generics.RequestCycle`` (authentication, permissions,
throttles, the action, the one error map) with a ``CallContext``. Here that
context wraps ``WebContext``, which answers what grpc's context would from
the HTTP request: the headers as invocation metadata (``authorization:
Bearer ...``), the client's address as the peer, the Connect or gRPC-Web
timeout as the deadline. A failed call's status becomes a ``ConnectError``
with the same code, message and details (``google.rpc.BadRequest``,
``google.rpc.RetryInfo``), which connectrpc sends with the HTTP status the
Connect protocol gives that code (``invalid_argument`` 400, ``unauthenticated``
401, ``not_found`` 404...). A request connectrpc refuses before any service
runs (unknown method, wrong content type or HTTP method) gets a Connect error
body too, never a Django page.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from http import HTTPStatus
from importlib import import_module
from typing import Any, NamedTuple, cast

import grpc
from connectrpc._server_shared import EndpointServerStreamSync, EndpointUnarySync
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectWSGIApplication, EndpointSync
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from protobuf.wkt import Any as AnyMessage

from grpc_ext.calls import CallContext, Status
from grpc_ext.discovery import DiscoveredService, discover_services
from grpc_ext.generics import RequestCycle, StreamState
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)

#: What an RPC is served by (connectrpc's public ``EndpointSync`` builds them; its subclasses are private).
Endpoint = EndpointUnarySync | EndpointServerStreamSync

#: ``/<package>.<Service>/<Method>``: the path of every Connect and gRPC-Web call (no Django URL looks like it).
PROCEDURE_PATH = r"^(?P<procedure>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+/[A-Za-z_]\w*)$"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: What connectrpc answers with an HTTP status and no body, as the Connect code a client would infer.
BODILESS_ERRORS = {
    HTTPStatus.NOT_FOUND: (Code.UNIMPLEMENTED, "No such method: {path}."),
    HTTPStatus.METHOD_NOT_ALLOWED: (Code.UNIMPLEMENTED, "{method} is not allowed: send the request with POST."),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: (
        Code.INVALID_ARGUMENT,
        "Content-Type {content_type!r} is not supported: send application/json or application/proto "
        "(Connect unary), application/connect+json or +proto (Connect streaming), or application/grpc-web+proto.",
    ),
}
#: Headers that carry the HTTP exchange, not the call: not passed to the service as metadata.
HOP_HEADERS = frozenset({"content-type", "content-length", "connection", "host", "te", "transfer-encoding"})


class Metadatum(NamedTuple):
    """One item of invocation metadata, as grpc.aio gives it (``item.key``, ``item.value``)."""

    key: str
    value: str | bytes


class WebContext:
    """A Connect or gRPC-Web request as the part of ``grpc.aio.ServicerContext`` that ``CallContext`` reads.

    The request headers are the invocation metadata (a ``-bin`` header is
    base64 on HTTP and bytes in gRPC), the client's address the peer in
    gRPC's form (``ipv4:10.0.0.1:5000``), the request's timeout the deadline.
    """

    def __init__(self, ctx: RequestContext):
        self._ctx = ctx
        self._callbacks: list[Callable[[Any], None]] = []

    def invocation_metadata(self) -> tuple[Metadatum, ...]:
        items = []
        for key, value in self._ctx.request_headers.allitems():
            key = key.lower()
            if key in HOP_HEADERS:
                continue
            if key.endswith("-bin"):
                try:
                    items.append(Metadatum(key, base64.b64decode(value + "===")))
                except ValueError:
                    continue
            else:
                items.append(Metadatum(key, value))
        return tuple(items)

    def peer(self) -> str:
        address, _, port = (self._ctx.client_address or "").rpartition(":")
        if not address:
            return "unknown"
        return f"ipv6:[{address}]:{port}" if ":" in address else f"ipv4:{address}:{port}"

    def time_remaining(self) -> float | None:
        remaining_ms = self._ctx.timeout_ms
        return None if remaining_ms is None else remaining_ms / 1000

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def cancelled(self) -> bool:
        return False

    def done(self) -> None:
        """Run the callbacks registered for the end of the call (``CallContext.add_callback``)."""
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("A call's done callback failed")


def web_call(ctx: RequestContext) -> CallContext:
    """Return the ``CallContext`` a service sees for a Connect or gRPC-Web request."""
    return CallContext(cast(grpc.aio.ServicerContext, WebContext(ctx)))


def connect_error(status: Status) -> ConnectError:
    """Return the Connect error of a call's status: the same code, message and rich details."""
    details = []
    for key, value in status.trailing_metadata:
        if key == STATUS_DETAILS_KEY:
            rich = status_pb2.Status.FromString(value)
            details = [ErrorDetail(AnyMessage(type_url=item.type_url, value=item.value)) for item in rich.details]
    return ConnectError(Code[status.code.name], status.details or "", details)


class JSONCodec:
    """Protobuf's JSON mapping (lowerCamelCase names, as Connect clients send), compact on the wire."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json.dumps(json_format.MessageToDict(message), separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        message = message_class()
        json_format.Parse(bytes(data), message, ignore_unknown_fields=True)
        return message


def unary_function(cycle: RequestCycle) -> Callable[[Message, RequestContext], Message]:
    """Return the endpoint function of a unary RPC: one run of the request cycle in the web server's thread."""

    def function(request: Message, ctx: RequestContext) -> Message:
        call = web_call(ctx)
        try:
            response, status = call.run(cycle.run_unary, request, call)
        finally:
            cast(WebContext, call._context).done()
        if status is not None:
            raise connect_error(status)
        return response

    return function


def server_stream_function(cycle: RequestCycle) -> Callable[[Message, RequestContext], Iterator[Message]]:
    """Return the endpoint function of a server-streaming RPC: one hop of the cycle per message sent."""

    def function(request: Message, ctx: RequestContext) -> Iterator[Message]:
        call = web_call(ctx)
        stream = StreamState(cycle.service_class)
        try:
            while True:
                response, status = call.run(cycle.next_batch, stream, request, call)
                if status is not None:
                    raise connect_error(status)
                if response is None:
                    return
                yield response
        finally:
            if not stream.finished:  # the client went away: close the generator and end the request cycle
                stream.close()
            cast(WebContext, call._context).done()

    return function


def unimplemented_function(service_class: type, action: str) -> Callable[[Message, RequestContext], Any]:
    def function(request: Message, ctx: RequestContext) -> Any:
        raise ConnectError(Code.UNIMPLEMENTED, f"{service_class.__name__} does not implement {action}.")

    return function


def method_info(method: MethodDescriptor) -> MethodInfo:
    """Describe an RPC to connectrpc from its generated descriptor: its name, messages and kind."""
    return MethodInfo(
        name=method.name,
        service_name=method.containing_service.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
    )


def service_endpoints(service: DiscoveredService) -> dict[str, Endpoint]:
    """Return the endpoints of one discovered service, by path, from its generated descriptors."""
    module = import_module(service.grpc_module.removesuffix("_grpc"))
    descriptor = module.DESCRIPTOR.services_by_name[service.name]
    endpoints: dict[str, Endpoint] = {}
    for method in descriptor.methods:
        if method.client_streaming:
            continue  # the project's services have no client streams (and browsers cannot send them)
        info = method_info(method)
        path = f"/{descriptor.full_name}/{method.name}"
        if not hasattr(service.service_class, method.name):
            endpoints[path] = EndpointSync.unary(
                method=info, function=unimplemented_function(service.service_class, method.name)
            )
            continue
        cycle = RequestCycle(service.service_class, method.name, {})
        if method.server_streaming:
            endpoints[path] = EndpointSync.server_stream(method=info, function=server_stream_function(cycle))
        else:
            endpoints[path] = EndpointSync.unary(method=info, function=unary_function(cycle))
    return endpoints


class ConnectApplication(ConnectWSGIApplication):
    """connectrpc's WSGI application over every discovered service."""

    path = "/"

    def __init__(self, services: Iterable[DiscoveredService]):
        endpoints: dict[str, Endpoint] = {}
        for service in services:
            endpoints.update(service_endpoints(service))
        max_bytes = dict(grpc_ext_settings.SERVER_OPTIONS).get("grpc.max_receive_message_length", 4 * 1024 * 1024)
        super().__init__(
            endpoints=endpoints,
            codecs=[google_protobuf_binary_codec(), JSONCodec()],
            read_max_bytes=max_bytes,
        )
        self.procedures = frozenset(endpoints)


@cache
def application() -> ConnectApplication:
    """Return the application of the services discovered in this process (built on first use)."""
    return ConnectApplication(discover_services())


def error_body(code: Code, message: str) -> bytes:
    return json.dumps({"code": code.value, "message": message}).encode()


@csrf_exempt
def procedure_view(request: HttpRequest, procedure: str) -> HttpResponseBase:
    """Serve one Connect or gRPC-Web call: hand the request to connectrpc, its answer back to Django.

    The body is read from the request (a file, on WSGI and ASGI alike), never
    parsed by Django; a unary answer is one response, a stream's answer is
    streamed as connectrpc writes it.
    """
    environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": f"/{procedure}",
        "QUERY_STRING": request.META.get("QUERY_STRING", ""),
        "SERVER_PROTOCOL": request.META.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "REMOTE_ADDR": request.META.get("REMOTE_ADDR", ""),
        "REMOTE_PORT": request.META.get("REMOTE_PORT", "0"),
        "wsgi.input": request,
        "wsgi.url_scheme": request.scheme,
        "wsgi.errors": _LogStream(),
        **{key: value for key, value in request.META.items() if key.startswith("HTTP_")},
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if request.META.get(key):
            environ[key] = request.META[key]
    started: list = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        started[:] = [status, headers]
        return lambda data: None

    body = application()(environ, start_response)
    status_line, headers = started
    code = int(status_line.split(" ", 1)[0])
    names = {name.lower() for name, _ in headers}
    if code >= 400 and "content-type" not in names:
        return bodiless_error(code, headers, request, procedure)
    response: HttpResponseBase
    if isinstance(body, list):
        response = HttpResponse(b"".join(body), status=code)
    else:
        response = StreamingHttpResponse(body, status=code)
    del response["Content-Type"]
    for name, value in headers:
        response[name] = value
    return response


def bodiless_error(code: int, headers: list[tuple[str, str]], request: HttpRequest, procedure: str) -> HttpResponse:
    """Give an HTTP error connectrpc sent without a body (404, 405, 415) the body of a Connect error."""
    connect_code, template = BODILESS_ERRORS.get(HTTPStatus(code), (Code.UNKNOWN, "HTTP {status}."))
    message = template.format(
        path=f"/{procedure}",
        method=request.method,
        content_type=request.META.get("CONTENT_TYPE", ""),
        status=code,
    )
    response = HttpResponse(error_body(connect_code, message), status=code, content_type="application/json")
    for name, value in headers:
        response[name] = value
    return response


class _LogStream:
    """``wsgi.errors`` for connectrpc: what it writes there (an unexpected error's traceback) goes to the log."""

    def write(self, text: str) -> None:
        logger.error("%s", text.rstrip())

    def flush(self) -> None:
        pass

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)


urlpatterns = [re_path(PROCEDURE_PATH, procedure_view, name="connect-procedure")]
