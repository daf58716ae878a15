"""The standard health service, with ``List`` (grpcio-health-checking's servicers leave it unimplemented)."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2


def _list_response(statuses: dict[str, int]) -> health_pb2.HealthListResponse:
    return health_pb2.HealthListResponse(
        statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
    )


class HealthServicer(health.HealthServicer):
    """``Check``, ``Watch`` and ``List``: every service the server reports on, with its status."""

    def List(self, request: health_pb2.HealthListRequest, context) -> health_pb2.HealthListResponse:
        with self._lock:
            return _list_response(dict(self._server_status))


class AsyncHealthServicer(health.aio.HealthServicer):
    """The ``grpc.aio`` twin of ``HealthServicer``."""

    async def List(self, request: health_pb2.HealthListRequest, context) -> health_pb2.HealthListResponse:
        return _list_response(dict(self._server_status))
