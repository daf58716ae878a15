"""An OTLP trace receiver in this process, over gRPC and over HTTP: where traced servers under test send their spans."""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _value(any_value: Any) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class SpanCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """Receive spans over OTLP on free loopback ports: count them, and keep them as dicts when ``keep``.

    ``with SpanCollector() as collector:`` serves it; ``collector.env(protocol)``
    is the environment of a server that exports to it over ``grpc`` or
    ``http/protobuf`` (``POST /v1/traces``).
    """

    def __init__(self, *, keep: bool = False):
        self.keep = keep
        self.count = 0
        self.spans: list[dict] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.http_port = self._http.server_address[1]

    def env(self, protocol: str) -> dict[str, str]:
        """Return the ``OTEL_EXPORTER_OTLP_*`` variables of a server exporting here over ``protocol``."""
        port = self.port if protocol == "grpc" else self.http_port
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}

    def __enter__(self) -> SpanCollector:
        self._server.start()
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(None)
        self._http.shutdown()
        self._http.server_close()

    def Export(self, request, context):
        kept: list[dict] = []
        count = 0
        for resource_spans in request.resource_spans:
            service = next(
                (_value(item.value) for item in resource_spans.resource.attributes if item.key == "service.name"), None
            )
            for scope_spans in resource_spans.scope_spans:
                count += len(scope_spans.spans)
                if self.keep:
                    kept.extend(_as_dict(span, service) for span in scope_spans.spans)
        with self._lock:
            self.count += count
            self.spans.extend(kept)
        return trace_service_pb2.ExportTraceServiceResponse()


def _as_dict(span: Any, service: object) -> dict:
    return {
        "service": service,
        "name": span.name,
        "kind": span.kind,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "start_ns": span.start_time_unix_nano,
        "end_ns": span.end_time_unix_nano,
        "attributes": {item.key: _value(item.value) for item in span.attributes},
    }


def _handler(collector: SpanCollector) -> type[BaseHTTPRequestHandler]:
    class OtlpHttpHandler(BaseHTTPRequestHandler):
        """``POST /v1/traces`` with an ``ExportTraceServiceRequest`` body (OTLP/HTTP, protobuf)."""

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            response = collector.Export(request, None).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(response)))
            self.end_headers()
            self.wfile.write(response)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return OtlpHttpHandler
