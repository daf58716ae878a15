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
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import h2.config
import h2.connection
import h2.events
import psycopg2
import psycopg2.errors
import pytest
from grpc_health.v1 import health_pb2

from cluster.drills import DRILLS, QUICK, DrillResult, restore
from cluster.hosts import (
    HAPROXY_CONFIG,
    HEALTH_CHECK_SERVING,
    PGBOUNCER_CONFIG,
    Cluster,
    health_check_request,
    missing_programs,
)
from cluster.load import PASSWORD
from grpc_ext.client import Client
from protos import posts_pb2, posts_pb2_grpc


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


def pgbouncer_pool_size() -> int:
    """Server connections PgBouncer lends at most per (database, user): its pool and its reserve."""
    settings = dict(re.findall(r"^(\w+) = (\S+)$", PGBOUNCER_CONFIG.read_text(), re.MULTILINE))
    return int(settings["default_pool_size"]) + int(settings["reserve_pool_size"])


def test_a_query_queued_in_pgbouncer_as_postgresql_stops_ends_unavailable_before_a_2_s_deadline(
    cluster: Cluster,
) -> None:
    """The postgres drill's rare DEADLINE_EXCEEDED, every time: a query that waits in PgBouncer's queue for a
    server connection as PostgreSQL stops is not refused with the clients that come after (PgBouncer 1.18);
    ``query_wait_timeout`` must end its wait before a no-retry call's 2 s deadline, UNAVAILABLE.

    Sleeping queries hold every server connection, so that the call's first query is queued; PostgreSQL's
    fast shutdown then ends them, and its restart waits until the call has ended.
    """
    email = f"queued-{uuid.uuid4().hex[:8]}@example.com"
    with Client(cluster.lb_address) as client:
        client.users.Create(email=email, password=PASSWORD)
        client.login(email, PASSWORD)
        post = client.posts.Create(title=f"queued-{uuid.uuid4().hex}")
        metadata = (("authorization", f"Bearer {client.access_token}"),)

    def sleep() -> None:
        try:
            connection = psycopg2.connect(cluster.pgbouncer_url, connect_timeout=3)
            try:
                connection.cursor().execute("SELECT pg_sleep(60)")
            finally:
                connection.close()
        except psycopg2.Error:
            pass  # ended by the shutdown, or by the cancel below

    def sleeping() -> int:
        with cluster.postgres() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
            return int(cursor.fetchone()[0])

    postgres = cluster.processes["postgres"]
    sleepers = [threading.Thread(target=sleep, daemon=True) for _ in range(pgbouncer_pool_size())]
    stopped = False
    try:
        for sleeper in sleepers:
            sleeper.start()
        cluster.wait_for(lambda: sleeping() == len(sleepers), "every PgBouncer server connection held", timeout=10)
        with grpc.insecure_channel(cluster.grpc_addresses[0], options=[("grpc.enable_retries", 0)]) as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            started = time.monotonic()
            call = stub.Retrieve.future(posts_pb2.PostRetrieveRequest(id=post.id), metadata=metadata, timeout=2)
            time.sleep(0.3)  # the call's query is in PgBouncer's queue
            postgres.send(signal.SIGINT)
            stopped = True
            code, details = call.code(), call.details()
            seconds = time.monotonic() - started
        assert code == grpc.StatusCode.UNAVAILABLE, f"{code.name} after {seconds:.2f} s: {details}"
        assert seconds < 2
    finally:
        if stopped:
            postgres.wait(30)  # its fast shutdown ends the sleepers
        else:
            with cluster.postgres() as cursor:
                cursor.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
        for sleeper in sleepers:
            sleeper.join(10)
        restore(cluster)


def test_the_cancel_request_of_a_connection_through_pgbouncer_stops_its_own_query_only(cluster: Cluster) -> None:
    """Why a cancelled call's query is stopped with the protocol's cancel request (``grpc_ext.server.pg_cancel``).

    Through PgBouncer the pid a connection reports is PgBouncer's own, not its backend's, so
    ``pg_cancel_backend`` of it cannot stop the query (or stops a stranger's); the cancel request, with
    the session's key, stops this client's query and leaves another client's, running beside it, alone.
    (The server still sends none behind a transaction pooler: ``sends_cancel_requests``.)
    """
    from grpc_ext.server.pg_cancel import cancel_handle

    def usable(connect) -> psycopg2.extensions.connection:
        """A connection through PgBouncer that answers: after a drill restarted PostgreSQL, a first statement may
        meet a server connection that died with it."""
        deadline = time.monotonic() + 10
        while True:
            connection = connect()
            try:
                connection.autocommit = True
                connection.cursor().execute("SELECT 1")
                return connection
            except psycopg2.OperationalError:
                connection.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def sleeper() -> tuple[psycopg2.extensions.connection, threading.Thread, dict]:
        connection = usable(lambda: psycopg2.connect(cluster.pgbouncer_url, connect_timeout=3))
        outcome: dict = {}

        def run() -> None:
            started = time.monotonic()
            try:
                connection.cursor().execute("SELECT pg_sleep(20)")
                outcome["error"] = None
            except psycopg2.Error as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        return connection, threading.Thread(target=run, daemon=True), outcome

    def sleeping() -> int:
        with cluster.postgres() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
            return int(cursor.fetchone()[0])

    (mine, my_query, my_outcome), (theirs, their_query, their_outcome) = sleeper(), sleeper()
    try:
        with mine.cursor() as cursor:  # outside a transaction PgBouncer lends a server connection per statement
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != mine.info.backend_pid  # the pid the driver knows names no backend
        handle = cancel_handle(mine)
        assert handle is not None
        my_query.start()
        their_query.start()
        cluster.wait_for(lambda: sleeping() == 2, "both queries running", timeout=10)

        handle.send()
        my_query.join(5)

        assert isinstance(my_outcome.get("error"), psycopg2.errors.QueryCanceled), my_outcome
        assert my_outcome["seconds"] < 5
        assert their_query.is_alive() and their_outcome == {} and sleeping() == 1
    finally:
        with cluster.postgres() as cursor:
            cursor.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
        for query in (my_query, their_query):
            if query.ident is not None:
                query.join(10)
        mine.close()
        theirs.close()


def test_with_no_host_in_the_rotation_the_balancer_answers_unavailable_to_unary_and_streaming_calls(
    cluster: Cluster,
) -> None:
    """HAProxy's own answer when no host can take a call is gRPC's UNAVAILABLE (deploy/cluster/grpc-unavailable.http).

    Its HTML 503 page ended a grpcio server-streaming call UNKNOWN "Stream removed" (the postgres drill,
    about one run in ten: a Stream sent while every host reported NOT_SERVING).
    """
    hosts = [f"grpc_hosts/grpc{index}" for index in range(1, len(cluster.grpc_addresses) + 1)]
    try:
        for host in hosts:
            cluster.balancer_command(f"disable server {host}")
        cluster.wait_for(lambda: cluster.balanced() == {"MAINT"}, "every gRPC host out of the rotation", timeout=10)
        with grpc.insecure_channel(cluster.lb_address, options=[("grpc.enable_retries", 0)]) as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            calls = {
                "Retrieve": lambda: stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(uuid.uuid4())), timeout=5),
                "Stream": lambda: list(stub.Stream(posts_pb2.PostStreamRequest(), timeout=5)),
            }
            for name, call in calls.items():
                for _ in range(20):
                    with pytest.raises(grpc.RpcError) as raised:
                        call()
                    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, (name, raised.value.details())
                    assert raised.value.details() == "No gRPC host could take the call; retry."
    finally:
        for host in hosts:
            cluster.balancer_command(f"enable server {host}")
        restore(cluster)
