"""Prometheus metrics per gRPC method and status code, served on a port of their own.

Off unless ``GRPC_FRAMEWORK["METRICS_PORT"]`` is set: then the server puts
``MetricsInterceptor`` first (so its latency covers the other interceptors)
and ``grpcrunserver`` serves ``/metrics`` on that port (worker ``i`` of
``--workers`` on port + ``i``). Names and labels follow go-grpc-prometheus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from grpc_ext.interceptors import _wrap_handler
from grpc_ext.settings import grpc_ext_settings

logger = logging.getLogger(__name__)

LABELS = ["grpc_service", "grpc_method"]
HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, by status code.", [*LABELS, "grpc_code"])
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Seconds from receiving an RPC to its last response.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IN_FLIGHT = Gauge("grpc_server_in_flight", "RPCs being handled now.", LABELS)


def split_method(full_method: str) -> tuple[str, str]:
    """``/posts.PostController/List`` -> ``("posts.PostController", "List")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def outcome_code(context: Any, failed: bool) -> grpc.StatusCode:
    """The status the client got: a stream it cancelled (or whose deadline passed) ends without a code."""
    code = context.code()
    if code is None and failed:
        remaining = context.time_remaining()
        if context.is_active():
            return grpc.StatusCode.UNKNOWN
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return code or grpc.StatusCode.OK


class MetricsInterceptor(grpc.ServerInterceptor):
    """Count each RPC by method and code, time it, and gauge those in flight."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        labels = split_method(handler_call_details.method)
        in_flight, seconds = IN_FLIGHT.labels(*labels), HANDLING_SECONDS.labels(*labels)

        def record(context, started: float, failed: bool) -> None:
            seconds.observe(time.perf_counter() - started)
            HANDLED.labels(*labels, outcome_code(context, failed).name).inc()
            in_flight.dec()

        def wrap_unary(behavior):
            def measured(request, context):
                started, failed = time.perf_counter(), True
                in_flight.inc()
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    record(context, started, failed)

            return measured

        def wrap_stream(behavior):
            def measured(request, context) -> Iterator:
                started, failed = time.perf_counter(), True
                in_flight.inc()
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    record(context, started, failed)

            return measured

        return _wrap_handler(handler, wrap_unary, wrap_stream)


def metrics_port(worker_index: int = 0) -> int | None:
    """The port this process serves metrics on, or ``None`` when metrics are off."""
    port = grpc_ext_settings.METRICS_PORT
    return int(port) + worker_index if port else None


def serve_metrics(worker_index: int = 0) -> int | None:
    """Serve ``/metrics`` over HTTP in a daemon thread when configured; return the port, or ``None``.

    Raise ``OSError`` when the port is taken.
    """
    port = metrics_port(worker_index)
    if port is None:
        return None
    start_http_server(port, addr=grpc_ext_settings.METRICS_ADDRESS)
    logger.info("Serving Prometheus metrics on %s:%s/metrics", grpc_ext_settings.METRICS_ADDRESS, port)
    return port
