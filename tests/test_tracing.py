"""Traces as a tracing backend receives them: a real server process exports over OTLP to a collector in this process.

The collector is the OTLP/gRPC ``TraceService`` built from ``opentelemetry-proto``'s
stubs; the servers (``grpcrunserver``, and granian for the REST side) find it
through ``OTEL_EXPORTER_OTLP_ENDPOINT`` alone, on the test database (SQLite or
PostgreSQL, as the run is).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from django.db import connection
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grpc_ext.client import AsyncClient, Client, ClientError
from grpc_ext.server import tracing
from grpc_ext.server.trace_logging import TraceContextFilter
from grpc_ext.server.transport import load_interceptors
from protos import posts_pb2, posts_pb2_grpc
from tests.support.factories import make_post
from tests.support.helpers import access_token, auth_metadata, running_web

BASE_DIR = Path(__file__).resolve().parent.parent
SERVICE_NAME = "grpc-ext-tracing-test"
RETRIEVE = "posts.PostController/Retrieve"
#: Longest wait for spans to arrive (the servers export every 50 ms).
ARRIVAL_TIMEOUT = 20.0

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode


# --------------------------------------------------------------------------- the collector


@dataclass
class ReceivedSpan:
    """One span as exported, with ids in hex and its resource's attributes."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    status_code: int
    status_message: str
    resource: dict = field(default_factory=dict)


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.arrived = threading.Condition()

    def Export(self, request, context):
        received = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={item.key: _value(item.value) for item in span.attributes},
                            status_code=span.status.code,
                            status_message=span.status.message,
                            resource=resource,
                        )
                    )
        with self.arrived:
            self.spans.extend(received)
            self.arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], what: str) -> list[ReceivedSpan]:
        """Return the spans once ``predicate`` holds for them; fail if it does not within ``ARRIVAL_TIMEOUT``."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: predicate(self.spans), timeout=ARRIVAL_TIMEOUT):
                names = sorted({span.name for span in self.spans})
                pytest.fail(f"the collector did not receive {what}; it has {len(self.spans)} spans: {names}")
            return list(self.spans)

    def server_span(self, name: str, trace_id: str | None = None) -> ReceivedSpan:
        """Wait for the SERVER span ``name`` (of trace ``trace_id``) and return it."""

        def matches(span: ReceivedSpan) -> bool:
            return span.name == name and span.kind == SERVER and trace_id in (None, span.trace_id)

        spans = self.wait_for(lambda spans: any(matches(span) for span in spans), f"a SERVER span {name}")
        (found,) = [span for span in spans if matches(span)]
        return found

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.parent_span_id == parent.span_id]


def http_receiver(collector: Collector) -> ThreadingHTTPServer:
    """Serve OTLP/HTTP (``POST /v1/traces``, protobuf) into ``collector`` on a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = collector.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(body), None)
            payload = answer.SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    """A collector served over OTLP/gRPC on a free port; yield it and the variables that export to it."""
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)


def database_url() -> str:
    """The URL of the test database, for the server processes."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    return (
        f"postgres://{settings['USER'] or 'postgres'}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}"
        f"/{settings['NAME']}"
    )


def tracing_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The environment of a server exporting to the collector's OTLP/gRPC ``endpoint``, sampling every call."""
    return {
        "DATABASE_URL": database_url(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }


@dataclass
class TracedServer:
    process: subprocess.Popen
    address: str

    def output(self) -> str:
        """Stop the server (SIGTERM: it drains and flushes its spans) and return what it wrote."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=30)[0]


@pytest.fixture
def traced_server(run_server, collector, user) -> Iterator[tuple[TracedServer, Collector]]:
    """``grpcrunserver`` exporting to the collector, logging every SQL statement (``TEST_LOG_SQL``)."""
    receiver, endpoint = collector
    process, address = run_server(env=tracing_env(endpoint, TEST_LOG_SQL="1"))
    yield TracedServer(process, address), receiver


def test_tracing_is_off_unless_an_otlp_endpoint_is_set(monkeypatch):
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not tracing.tracing_enabled()
    assert not any(isinstance(interceptor, tracing.TracingInterceptor) for interceptor in load_interceptors())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317")
    assert tracing.tracing_enabled()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.tracing_enabled()


def test_the_protocol_variable_picks_the_exporter_http_by_default(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    assert type(tracing.span_exporter()).__module__ == "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert type(tracing.span_exporter()).__module__ == "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert type(tracing.span_exporter()).__module__ == "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(Exception, match="'grpc' or 'http/protobuf'"):
        tracing.span_exporter()


def test_log_records_outside_a_traced_call_carry_no_trace_ids():
    record = logging.LogRecord("grpc_ext.access", logging.INFO, __file__, 1, "rpc", (), None)
    assert TraceContextFilter().filter(record)
    assert record.trace_context == ""  # type: ignore[attr-defined]


def client_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_python_clients_call_is_one_trace_through_the_server_and_its_sql(traced_server, user):
    server, collector = traced_server
    post = make_post(owner=user, title="Traced")
    provider, exporter = client_provider()
    token = access_token(user)
    with Client(server.address, token=token, tracer_provider=provider) as client:
        assert client.posts.Retrieve(id=str(post.id)).title == "Traced"
    (client_span,) = exporter.get_finished_spans()
    assert (client_span.name, client_span.kind.name) == (RETRIEVE, "CLIENT")
    assert client_span.attributes["rpc.grpc.status_code"] == 0
    trace_id = format(client_span.context.trace_id, "032x")

    span = collector.server_span(RETRIEVE, trace_id)
    assert span.parent_span_id == format(client_span.context.span_id, "016x")  # traceparent honoured
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == "posts.PostController"
    assert span.attributes["rpc.method"] == "Retrieve"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["enduser.id"] == str(user.pk)
    assert span.status_code != STATUS_ERROR
    assert span.resource["service.name"] == SERVICE_NAME
    assert span.resource["deployment.environment"] == "test"

    statements = collector.wait_for(lambda spans: len(collector.children(span)) >= 1, "the call's SQL spans")
    statements = collector.children(span)
    assert all(statement.kind == CLIENT and statement.trace_id == trace_id for statement in statements)
    (lookup,) = [statement for statement in statements if statement.attributes.get("db.sql.table") == "posts_post"]
    assert lookup.name == "SELECT posts_post"
    assert lookup.attributes["db.system"] == connection.vendor
    assert lookup.attributes["db.operation"] == "SELECT"
    assert lookup.attributes["db.statement"].startswith("SELECT ")  # as Django wrote it, before the statement timeout
    # No secret and no request data: neither the token nor the key looked up is in any attribute.
    values = [str(value) for received in [span, *statements] for value in received.attributes.values()]
    assert not [value for value in values if token in value or str(post.id) in value]


def test_a_callers_traceparent_and_tracestate_make_the_server_span_join_its_trace(traced_server, user):
    server, collector = traced_server
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    metadata = (
        *auth_metadata(user),
        ("traceparent", f"00-{trace_id}-{parent_id}-01"),
        ("tracestate", "vendor=opaque"),
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = posts_pb2_grpc.PostControllerStub(channel)
        stub.List(posts_pb2.PostListRequest(page_size=1), metadata=metadata, timeout=10)
    span = collector.server_span("posts.PostController/List", trace_id)
    assert span.parent_span_id == parent_id


def test_a_failed_call_is_an_error_span_with_the_code_the_client_got_and_no_user(traced_server, user):
    server, collector = traced_server
    missing = "00000000-0000-0000-0000-000000000000"
    provider, exporter = client_provider()
    with Client(server.address, tracer_provider=provider) as client:  # no token
        with pytest.raises(ClientError) as error:
            client.posts.Retrieve(id=missing)
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    (client_span,) = exporter.get_finished_spans()
    assert client_span.status.status_code.name == "ERROR"
    span = collector.server_span(RETRIEVE, format(client_span.context.trace_id, "032x"))
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert span.status_code == STATUS_ERROR and span.status_message == "UNAUTHENTICATED"
    assert "enduser.id" not in span.attributes

    with Client(server.address, token=access_token(user), tracer_provider=provider) as client:
        with pytest.raises(ClientError) as error:
            client.posts.Retrieve(id=missing)
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    client_span = exporter.get_finished_spans()[-1]
    span = collector.server_span(RETRIEVE, format(client_span.context.trace_id, "032x"))
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.status_code == STATUS_ERROR and span.status_message == "NOT_FOUND"
    assert missing not in str(span.attributes)


def test_a_stream_is_one_span_with_its_batch_count_over_every_batchs_sql(traced_server, user):
    server, collector = traced_server
    for index in range(3):
        make_post(owner=user, title=f"row {index}")
    provider, exporter = client_provider()
    with Client(server.address, token=access_token(user), tracer_provider=provider) as client:
        rows = list(client.posts.stream(batch_size=1))
    assert len(rows) == 3
    (client_span,) = exporter.get_finished_spans()
    span = collector.server_span("posts.PostController/Stream", format(client_span.context.trace_id, "032x"))
    assert span.attributes[tracing.STREAM_BATCHES] == 3
    assert span.attributes["rpc.grpc.status_code"] == 0
    collector.wait_for(lambda spans: len(collector.children(span)) >= 3, "a SQL span per batch")
    selects = [child for child in collector.children(span) if child.name == "SELECT posts_post"]
    assert len(selects) >= 3  # one keyset query per batch, each from a pool hop of its own


def test_the_async_client_sends_its_trace_too(traced_server, user):
    server, collector = traced_server
    post = make_post(owner=user)
    provider, exporter = client_provider()

    async def retrieve() -> None:
        async with AsyncClient(server.address, token=access_token(user), tracer_provider=provider) as client:
            await client.posts.Retrieve(id=str(post.id))
            await asyncio.sleep(0)  # the span ends from the call's done callback

    asyncio.run(retrieve())
    (client_span,) = exporter.get_finished_spans()
    assert client_span.kind.name == "CLIENT" and client_span.attributes["rpc.grpc.status_code"] == 0
    span = collector.server_span(RETRIEVE, format(client_span.context.trace_id, "032x"))
    assert span.parent_span_id == format(client_span.context.span_id, "016x")


def test_the_access_log_and_every_record_within_a_call_carry_its_trace_and_span_ids(traced_server, user):
    server, collector = traced_server
    post = make_post(owner=user)
    with Client(server.address, token=access_token(user)) as client:
        client.posts.Retrieve(id=str(post.id))
    span = collector.server_span(RETRIEVE)
    ids = f"trace_id={span.trace_id} span_id={span.span_id}"
    lines = server.output().splitlines()
    (access,) = [line for line in lines if "rpc method=/posts.PostController/Retrieve " in line]
    assert access.endswith(ids)
    # django.db.backends logs each statement from the pool thread that ran it, after its own span ended.
    statements = [line for line in lines if " django.db.backends " in line and '"posts_post"' in line]
    assert statements and all(line.endswith(ids) for line in statements)
    # Records outside any call (start-up, shutdown) carry none.
    assert any("Server stopped" in line and "trace_id=" not in line for line in lines)


@pytest.fixture
def traced_web(collector, user) -> Iterator[tuple[str, Collector]]:
    """The REST perimeter under granian (``demo.wsgi``), exporting to the collector."""
    receiver, endpoint = collector
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo.settings", **tracing_env(endpoint)}
    with running_web(env) as (base, _):
        yield base, receiver


def test_the_rest_api_exports_request_spans_with_the_same_service_and_their_sql(traced_web, user):
    base, collector = traced_web
    post = make_post(owner=user)
    request = urllib.request.Request(
        f"{base}/api/posts/{post.id}/", headers={"Authorization": f"Bearer {access_token(user)}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    spans = collector.wait_for(
        lambda spans: any(span.kind == SERVER and "api/posts" in span.name for span in spans), "the request's span"
    )
    (span,) = [span for span in spans if span.kind == SERVER and "api/posts" in span.name]
    assert span.resource["service.name"] == SERVICE_NAME
    assert span.attributes.get("http.status_code", span.attributes.get("http.response.status_code")) == 200
    collector.wait_for(lambda spans: bool(collector.children(span)), "the request's SQL spans")
    assert any(child.name == "SELECT posts_post" for child in collector.children(span))


def test_connect_calls_of_the_web_process_are_server_spans_joining_the_callers_trace(traced_web, user):
    """A Connect JSON Retrieve (``grpc_ext.gateway``, in front of Django) is a span as over gRPC, with its SQL."""
    base, collector = traced_web
    post = make_post(owner=user)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    def retrieve(post_id: str) -> int:
        request = urllib.request.Request(
            f"{base}/posts.PostController/Retrieve",
            data=json.dumps({"id": post_id}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {access_token(user)}",
                "traceparent": f"00-{trace_id}-{parent_id}-01",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert retrieve(str(post.id)) == 200
    span = collector.server_span("posts.PostController/Retrieve", trace_id)
    assert span.parent_span_id == parent_id
    assert span.attributes["rpc.system"] == "connect_rpc"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["enduser.id"] == str(user.pk)
    assert span.resource["service.name"] == SERVICE_NAME
    collector.wait_for(lambda spans: bool(collector.children(span)), "the call's SQL spans")
    assert any(child.name == "SELECT posts_post" for child in collector.children(span))

    assert retrieve(str(uuid.uuid4())) == 404
    failed = collector.wait_for(
        lambda spans: any(s.attributes.get("rpc.connect_rpc.error_code") == "not_found" for s in spans),
        "the failed call's span",
    )
    (error_span,) = [s for s in failed if s.attributes.get("rpc.connect_rpc.error_code") == "not_found"]
    assert error_span.status_code == STATUS_ERROR and error_span.attributes["rpc.grpc.status_code"] == 5


def test_without_a_protocol_the_server_exports_over_otlp_http(run_server, collector, user):
    receiver, _ = collector
    http = http_receiver(receiver)
    try:
        env = {
            "DATABASE_URL": database_url(),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http.server_address[1]}",
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        _, address = run_server(env=env)
        with grpc.insecure_channel(address) as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            stub.List(posts_pb2.PostListRequest(page_size=1), metadata=auth_metadata(user), timeout=10)
        span = receiver.server_span("posts.PostController/List")
        assert span.resource["service.name"] == SERVICE_NAME
    finally:
        http.shutdown()
        http.server_close()
