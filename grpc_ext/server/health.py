"""The standard health service, with ``List`` (grpcio-health-checking's servicers leave it unimplemented).

Besides ``""`` (the server: ready for RPCs) and each service, it reports
``LIVENESS_SERVICE``: SERVING from start-up until the server drains, whatever
the state of the database. A liveness probe restarts the process when it
fails, and a restart cures no database outage, so it asks for this name.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

LIVENESS_SERVICE = "liveness"


def _list_response(statuses: dict[str, int]) -> health_pb2.HealthListResponse:
    return health_pb2.HealthListResponse(
        statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
    )


class AsyncHealthServicer(health.aio.HealthServicer):
    """``Check``, ``Watch`` and ``List`` on ``grpc.aio``: every name the server reports on, with its status."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._server_status[LIVENESS_SERVICE] = health_pb2.HealthCheckResponse.SERVING

    async def List(self, request: health_pb2.HealthListRequest, context) -> health_pb2.HealthListResponse:
        return _list_response(dict(self._server_status))
