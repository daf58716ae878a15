"""Every gRPC service over the Connect protocol and gRPC-Web, from the web process (connectrpc).

Browsers cannot speak gRPC (no trailers, no HTTP/2 control); the Connect
protocol (JSON or binary, unary and server streaming) and gRPC-Web can be
spoken over plain HTTP/1.1 or HTTP/2, by ``@connectrpc/connect-web``, curl or
any HTTP client. connectrpc's WSGI application speaks both; this module gives
it one endpoint per RPC of every service the gRPC server serves
(``grpc_ext.contract.discovery``: a new app needs nothing more), at the standard path
``/<package>.<Service>/<Method>``, and puts it in front of Django in the
web process's WSGI application (``with_connect``, ``demo/wsgi.py``), so that
``runserver`` and granian serve it with the rest of the site.

The gRPC handlers and these endpoints are two faces of one service class:
both drive the service's ``RequestCycle`` (authentication, permissions,
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
import re
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
from corsheaders.conf import conf as cors
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from protobuf.wkt import Any as AnyMessage
from rest_framework.settings import api_settings

from grpc_ext.contract.discovery import DiscoveredService, discover_services
from grpc_ext.server.calls import CallContext, Status
from grpc_ext.server.tracing import WebCallTracer, tracing_enabled
from grpc_ext.services.generics import RequestCycle, StreamState
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

    @property
    def num_proxies(self) -> int:
        """The trusted proxies in front of the web process: REST's ``NUM_PROXIES`` (``throttling.client_address``)."""
        return api_settings.NUM_PROXIES or 0

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


#: One encoder for every response (``json.dumps`` with options builds a new one per call).
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class JSONCodec:
    """Protobuf's JSON mapping (lowerCamelCase names, as Connect clients send), compact on the wire."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return _compact_json.encode(json_format.MessageToDict(message)).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        message = message_class()
        json_format.Parse(bytes(data), message, ignore_unknown_fields=True)
        return message


def unary_function(cycle: RequestCycle, tracer: WebCallTracer | None) -> Callable[[Message, RequestContext], Message]:
    """Return the endpoint function of a unary RPC: one run of the request cycle in the web server's thread.

    With ``tracer`` (tracing on), the call is a SERVER span, as a gRPC call is.
    """

    def function(request: Message, ctx: RequestContext) -> Message:
        call = web_call(ctx)
        span = tracer.start(call) if tracer is not None else None
        status: Status | None = None
        try:
            response, status = call.run(cycle.run_unary, request, call)
        finally:
            cast(WebContext, call._context).done()
            if span is not None:
                span.finish(status.code if status is not None else grpc.StatusCode.OK, streaming=False)
        if status is not None:
            raise connect_error(status)
        return response

    return function


def server_stream_function(
    cycle: RequestCycle, tracer: WebCallTracer | None
) -> Callable[[Message, RequestContext], Iterator[Message]]:
    """Return the endpoint function of a server-streaming RPC: one hop of the cycle per message sent.

    With ``tracer`` (tracing on), the whole stream is one SERVER span with its message count.
    """

    def function(request: Message, ctx: RequestContext) -> Iterator[Message]:
        call = web_call(ctx)
        span = tracer.start(call) if tracer is not None else None
        stream = StreamState(cycle.service_class)
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise: the client went away
        try:
            while True:
                response, status = call.run(cycle.next_batch, stream, request, call)
                if status is not None:
                    code = status.code
                    raise connect_error(status)
                if response is None:
                    code = grpc.StatusCode.OK
                    return
                if span is not None:
                    span.batches += 1
                yield response
        finally:
            if not stream.finished:  # the client went away: close the generator and end the request cycle
                stream.close()
            cast(WebContext, call._context).done()
            if span is not None:
                span.finish(code, streaming=True)

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
        cycle = service.service_class.request_cycle_class(service.service_class, method.name, {})
        tracer = WebCallTracer(descriptor.full_name, method.name) if tracing_enabled() else None
        if method.server_streaming:
            endpoints[path] = EndpointSync.server_stream(method=info, function=server_stream_function(cycle, tracer))
        else:
            endpoints[path] = EndpointSync.unary(method=info, function=unary_function(cycle, tracer))
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


class ConnectDispatcher:
    """A WSGI application: Connect and gRPC-Web calls to connectrpc, every other request to Django.

    A call (``/<package>.<Service>/<Method>``) skips Django's request
    handling and middleware, which would cost more than the call itself
    (a Retrieve: about 0.8 ms in process this way, 1.7 ms through the
    middleware and a view): the request cycle has its own signals,
    authentication and rate limits. What the middleware would give a call is
    done here: ``ALLOWED_HOSTS``, and CORS from django-cors-headers' settings
    (``CORS_ALLOWED_ORIGINS``, ``CORS_ALLOW_HEADERS``, ``CORS_EXPOSE_HEADERS``...),
    so one configuration serves the REST API and the calls.
    """

    def __init__(self, django_application: Callable):
        self.django_application = django_application
        self.procedure = re.compile(PROCEDURE_PATH)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not self.procedure.match(path.removeprefix("/")):
            return self.django_application(environ, start_response)
        environ["SCRIPT_NAME"] = ""
        if not allowed_host(environ):
            return error_response(start_response, 400, Code.INVALID_ARGUMENT, "Invalid Host header.")
        cors = cors_headers(environ)
        if environ["REQUEST_METHOD"] == "OPTIONS" and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
            start_response("200 OK", [*cors, ("content-length", "0")])
            return []
        started: list = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            started[:] = [status, headers]
            return lambda data: None

        body = application()(environ, capture)
        status_line, headers = started
        code = int(status_line.split(" ", 1)[0])
        if code >= 400 and not any(name.lower() == "content-type" for name, _ in headers):
            connect_code, template = BODILESS_ERRORS.get(HTTPStatus(code), (Code.UNKNOWN, "HTTP {status}."))
            message = template.format(
                path=path, method=environ["REQUEST_METHOD"], content_type=environ.get("CONTENT_TYPE", ""), status=code
            )
            return error_response(start_response, code, connect_code, message, [*headers, *cors])
        start_response(status_line, [*headers, *cors])
        return body


def error_response(
    start_response: Callable, code: int, connect_code: Code, message: str, headers: Iterable[tuple[str, str]] = ()
) -> list[bytes]:
    """Answer with a Connect error body (``application/json``) and the HTTP status ``code``."""
    body = error_body(connect_code, message)
    status = HTTPStatus(code)
    start_response(
        f"{code} {status.phrase}",
        [*headers, ("content-type", "application/json"), ("content-length", str(len(body)))],
    )
    return [body]


def allowed_host(environ: dict) -> bool:
    """Tell whether the request's Host is one of ``ALLOWED_HOSTS`` (as ``HttpRequest.get_host`` checks)."""
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def cors_headers(environ: dict) -> list[tuple[str, str]]:
    """Return the CORS headers of a call from another origin, as django-cors-headers gives the REST API."""
    origin = environ.get("HTTP_ORIGIN")
    if not origin:
        return []
    if not (cors.CORS_ALLOW_ALL_ORIGINS or origin_allowed(origin)):
        return [("vary", "origin")]
    headers = [("vary", "origin")]
    if cors.CORS_ALLOW_ALL_ORIGINS and not cors.CORS_ALLOW_CREDENTIALS:
        headers.append(("access-control-allow-origin", "*"))
    else:
        headers.append(("access-control-allow-origin", origin))
    if cors.CORS_ALLOW_CREDENTIALS:
        headers.append(("access-control-allow-credentials", "true"))
    if cors.CORS_EXPOSE_HEADERS:
        headers.append(("access-control-expose-headers", ", ".join(cors.CORS_EXPOSE_HEADERS)))
    if environ["REQUEST_METHOD"] == "OPTIONS":
        headers.append(("access-control-allow-headers", ", ".join(cors.CORS_ALLOW_HEADERS)))
        headers.append(("access-control-allow-methods", ", ".join(cors.CORS_ALLOW_METHODS)))
        if cors.CORS_PREFLIGHT_MAX_AGE:
            headers.append(("access-control-max-age", str(cors.CORS_PREFLIGHT_MAX_AGE)))
    return headers


def origin_allowed(origin: str) -> bool:
    """Tell whether ``origin`` is one of ``CORS_ALLOWED_ORIGINS`` or matches ``CORS_ALLOWED_ORIGIN_REGEXES``."""
    return origin in cors.CORS_ALLOWED_ORIGINS or any(
        re.match(pattern, origin) for pattern in cors.CORS_ALLOWED_ORIGIN_REGEXES
    )


def with_connect(django_application: Callable) -> ConnectDispatcher:
    """Serve every service over Connect and gRPC-Web next to ``django_application`` (``demo/wsgi.py``)."""
    return ConnectDispatcher(django_application)
