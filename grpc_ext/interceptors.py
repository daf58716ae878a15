"""Server interceptors, each doing one job. Named by dotted path in ``SERVER_INTERCEPTORS``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import grpc

access_logger = logging.getLogger("grpc_ext.access")


def _wrap_handler(handler: grpc.RpcMethodHandler, wrap_unary: Callable, wrap_stream: Callable) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its behaviour wrapped, keeping its (de)serializers."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
    )


class AccessLogInterceptor(grpc.ServerInterceptor):
    """Log one line per RPC: ``method=... peer=... code=... duration_ms=...``."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not access_logger.isEnabledFor(logging.INFO):
            return handler
        method = handler_call_details.method

        def log(context, started: float, failed: bool) -> None:
            code = context.code()
            if code is None and failed:
                # A stream the client cancelled, or whose deadline passed, is closed without a code.
                remaining = context.time_remaining()
                if context.is_active():
                    code = grpc.StatusCode.UNKNOWN
                elif remaining is not None and remaining <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                else:
                    code = grpc.StatusCode.CANCELLED
            code = code or grpc.StatusCode.OK
            access_logger.info(
                "rpc method=%s peer=%s code=%s duration_ms=%.2f",
                method,
                context.peer(),
                code.name,
                (time.perf_counter() - started) * 1000,
            )

        def wrap_unary(behavior):
            def logged(request, context):
                started, failed = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    log(context, started, failed)

            return logged

        def wrap_stream(behavior):
            def logged(request, context) -> Iterator:
                started, failed = time.perf_counter(), True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    log(context, started, failed)

            return logged

        return _wrap_handler(handler, wrap_unary, wrap_stream)
