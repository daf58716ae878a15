"""Prometheus metrics per gRPC method and status code, served on a port of their own.

Off unless ``GRPC_FRAMEWORK["METRICS_PORT"]`` is set: then the server puts
``MetricsInterceptor`` before the configured interceptors (its latency covers them)
and ``grpcrunserver`` serves ``/metrics`` on that port (worker ``i`` of
``--workers`` on port + ``i``). Names and labels follow go-grpc-prometheus.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from grpc_ext.server.limits import ObservingInterceptor, outcome_code
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


class MetricsInterceptor(ObservingInterceptor):
    """Count each RPC by method and the code the client got, time it, and gauge those in flight.

    The access log's pattern: the handler is wrapped, so a call counts from
    the moment it is handled until its last response or its end.
    """

    def observers(self, method: str):
        labels = split_method(method)
        in_flight, seconds = IN_FLIGHT.labels(*labels), HANDLING_SECONDS.labels(*labels)

        def begin(context) -> float:
            in_flight.inc()
            return time.perf_counter()

        def record(context, started: float, exc: BaseException | None) -> None:
            seconds.observe(time.perf_counter() - started)
            HANDLED.labels(*labels, outcome_code(context, exc).name).inc()
            in_flight.dec()

        return begin, record


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
