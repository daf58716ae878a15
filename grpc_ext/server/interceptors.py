"""Server interceptors (``grpc.aio.ServerInterceptor``), each doing one job, named in ``SERVER_INTERCEPTORS``."""

from __future__ import annotations

import logging
import time

from grpc_ext.server.limits import ObservingInterceptor, outcome_code, wrap_handler

access_logger = logging.getLogger("grpc_ext.access")

__all__ = ["AccessLogInterceptor", "wrap_handler"]


class AccessLogInterceptor(ObservingInterceptor):
    """Log one line per RPC: ``method=... peer=... code=... duration_ms=...``.

    The code is the one the client got: a call the client cancelled is
    CANCELLED, one whose deadline passed DEADLINE_EXCEEDED, never OK.
    """

    def observing(self) -> bool:
        return access_logger.isEnabledFor(logging.INFO)

    def observers(self, method: str):
        def begin(context) -> tuple[float, str]:
            # The peer is read while the call is alive: grpc.aio's peer() after the call ended may crash.
            return time.perf_counter(), context.peer()

        def log(context, begun: tuple[float, str], exc: BaseException | None) -> None:
            started, peer = begun
            access_logger.info(
                "rpc method=%s peer=%s code=%s duration_ms=%.2f",
                method,
                peer,
                outcome_code(context, exc).name,
                (time.perf_counter() - started) * 1000,
            )

        return begin, log
