"""Server interceptors (``grpc.aio.ServerInterceptor``), each doing one job, named in ``SERVER_INTERCEPTORS``."""

from __future__ import annotations

import inspect
import logging
import time

import grpc

from grpc_ext.limits import outcome_code, wrap_handler

access_logger = logging.getLogger("grpc_ext.access")

__all__ = ["AccessLogInterceptor", "wrap_handler"]


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Log one line per RPC: ``method=... peer=... code=... duration_ms=...``.

    The code is the one the client got: a call the client cancelled is
    CANCELLED, one whose deadline passed DEADLINE_EXCEEDED, never OK.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not access_logger.isEnabledFor(logging.INFO):
            return handler
        method = handler_call_details.method

        # The peer is read while the call is alive: grpc.aio's peer() after the call ended may crash.
        def log(context, peer: str, started: float, exc: BaseException | None) -> None:
            access_logger.info(
                "rpc method=%s peer=%s code=%s duration_ms=%.2f",
                method,
                peer,
                outcome_code(context, exc).name,
                (time.perf_counter() - started) * 1000,
            )

        def wrap_unary(behavior):
            async def logged(request, context):
                started, peer, error = time.perf_counter(), context.peer(), None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    log(context, peer, started, error)

            return logged

        def wrap_stream(behavior):
            if not inspect.isasyncgenfunction(behavior):
                return wrap_unary(behavior)

            async def logged(request, context):
                started, peer, error = time.perf_counter(), context.peer(), None
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    log(context, peer, started, error)

            return logged

        return wrap_handler(handler, wrap_unary, wrap_stream)
