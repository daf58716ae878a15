"""The quick drills of the local cluster (``cluster.drills.QUICK``), against a real one: what clients saw.

One cluster for the module (``cluster.hosts.Cluster``: three gRPC hosts behind
HAProxy, PgBouncer in transaction mode, PostgreSQL and Redis of its own), then
each drill under load; a test fails with the drill's figures and failures. The
Debian packages come from ``python3 dev.py test`` (apt-get, as root); without
them the drills are skipped, and in CI they fail instead. The longer drills
(Redis stopped or frozen for 20 s) run with ``python3 dev.py drill``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health_pb2

from cluster.drills import DRILLS, QUICK, DrillResult, restore
from cluster.hosts import HAPROXY_CONFIG, HEALTH_CHECK_SERVING, Cluster, health_check_request, missing_programs


def test_the_balancers_health_check_is_a_grpc_health_check_request_for_the_whole_server():
    """HAProxy's bytes are an HTTP/2 request a gRPC server reads as Health/Check for ""."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    events = server.receive_data(health_check_request())
    request = next(event for event in events if isinstance(event, h2.events.RequestReceived))
    headers = {name.decode(): value.decode() for name, value in request.headers}
    assert headers[":method"] == "POST"
    assert headers[":path"] == "/grpc.health.v1.Health/Check"
    assert headers["content-type"] == "application/grpc"
    assert headers["te"] == "trailers"
    data = b"".join(event.data for event in events if isinstance(event, h2.events.DataReceived))
    assert data[:1] == b"\x00" and int.from_bytes(data[1:5], "big") == len(data) - 5
    assert health_pb2.HealthCheckRequest.FromString(data[5:]) == health_pb2.HealthCheckRequest(service="")
    assert any(isinstance(event, h2.events.StreamEnded) for event in events)


def test_the_shipped_haproxy_config_sends_that_request_and_waits_for_serving():
    config = HAPROXY_CONFIG.read_text()
    assert re.search(r"tcp-check send-binary (\w+)", config)[1] == health_check_request().hex()  # type: ignore[index]
    assert re.search(r"tcp-check expect binary (\w+)", config)[1] == HEALTH_CHECK_SERVING.hex()  # type: ignore[index]
    assert health_pb2.HealthCheckResponse.FromString(HEALTH_CHECK_SERVING[5:]).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = missing_programs()
    if missing:
        message = f"the local cluster needs {', '.join(missing)} (python3 dev.py test installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: cannot run in CI", pytrace=False)
        pytest.skip(message)
    running = Cluster()
    try:
        running.start()
        yield running
    finally:
        running.stop()
        running.remove()


@pytest.mark.parametrize("name", QUICK)
def test_drill(cluster: Cluster, name: str) -> None:
    """The drill finds nothing wrong: its checks are what the issue asks of each fault."""
    result: DrillResult = DRILLS[name](cluster)
    try:
        assert result.passed, "\n".join(result.lines())
        assert result.figures["acknowledged Creates"] > 0, "the load wrote nothing: the drill proved nothing"
    finally:
        restore(cluster)
