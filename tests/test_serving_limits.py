"""No client can stall the server: requests that never arrive, responses never read, deadlines, cancellation.

The misbehaving clients speak raw HTTP/2 (``tests.support.rawh2``): headers with no
message, or a request whose response they never read. Meanwhile a well-behaved
client must still get Health/Check and an authenticated Retrieve well within a
second (a liveness bound, not a speed measurement).
"""

from __future__ import annotations

import logging
import resource
import signal
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from django.db import connection
from django.db.models.expressions import RawSQL
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_ext.server.transport import serve_in_background
from grpc_ext.signals import grpc_request_finished, grpc_request_started
from posts.selectors import post_list
from posts.servicers import PostService
from protos import auth_pb2, auth_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc
from tests.support.factories import make_post
from tests.support.helpers import (
    access_token,
    aio_only,
    assert_status,
    auth_metadata,
    database_url_of_this_run,
    native_only,
)
from tests.support.rawh2 import RawConnection

RETRIEVE = "/posts.PostController/Retrieve"
STREAM = "/posts.PostController/Stream"
SERVING = health_pb2.HealthCheckResponse.SERVING


def assert_still_answering(address: str, token: str | None = None, post_id: str | None = None) -> None:
    """Health/Check, and an authenticated Retrieve when given a token, answer within a second on a new connection."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING
        if token is not None:
            retrieve = channel.unary_unary(
                RETRIEVE,
                request_serializer=posts_pb2.PostRetrieveRequest.SerializeToString,
                response_deserializer=posts_pb2.Post.FromString,
            )
            request = posts_pb2.PostRetrieveRequest(id=post_id)
            assert retrieve(request, metadata=(("authorization", f"Bearer {token}"),), timeout=1).id == post_id


def wait_for_trailers(raw: RawConnection, stream_id: int) -> dict:
    """Return the headers and trailers the server sent on ``stream_id`` once they hold a status (5 s at most)."""
    trailers: dict = {}
    for _ in range(20):
        for event in raw.settle(0.25):
            if getattr(event, "stream_id", None) == stream_id and getattr(event, "headers", None):
                trailers.update(dict(event.headers))
        if "grpc-status" in trailers:
            break
    return trailers


def stall_requests(address: str, *, connections: int, calls: int) -> list[RawConnection]:
    """Open ``calls`` Retrieve calls with headers and no message on each of ``connections`` connections."""
    opened = []
    for _ in range(connections):
        raw = RawConnection(address)
        for _ in range(calls):
            raw.open_call(RETRIEVE)
        opened.append(raw)
    return opened


def stop_reading_streams(address: str, token: str, *, connections: int, calls: int) -> list[RawConnection]:
    """Start ``calls`` authenticated Streams per connection, then read none of their responses."""
    opened = []
    for _ in range(connections):
        raw = RawConnection(address, window=256)
        for _ in range(calls):
            raw.open_call(
                STREAM,
                metadata=(("authorization", f"Bearer {token}"),),
                request=posts_pb2.PostStreamRequest(batch_size=50),
            )
        raw.settle(0.2)
        opened.append(raw)
    return opened


def close_all(opened: list[RawConnection]) -> None:
    for raw in opened:
        raw.close()


@pytest.fixture
def posts_to_stream(user):
    """Enough posts that one Stream batch is far larger than the stalled clients' receive window."""
    return [make_post(owner=user) for _ in range(60)]


@pytest.mark.parametrize(("connections", "calls"), [(1, 50), (30, 10)], ids=["one-connection", "many-connections"])
def test_requests_that_never_arrive_hold_no_thread(grpc_address, user, post, connections, calls):
    opened = stall_requests(grpc_address, connections=connections, calls=calls)
    try:
        for _ in range(3):
            assert_still_answering(grpc_address, access_token(user), str(post.id))
    finally:
        close_all(opened)


@pytest.fixture
def posts_past_any_buffer(user):
    """Enough posts that a Stream outgrows what a transport buffers for a client that does not read (native: ~64 KB)."""
    return [make_post(owner=user, description="x" * 200) for _ in range(600)]


@pytest.mark.parametrize(("connections", "calls"), [(1, 20), (20, 1)], ids=["one-connection", "many-connections"])
def test_streams_whose_client_stops_reading_hold_no_thread(
    grpc_address, user, post, posts_past_any_buffer, connections, calls
):
    """More Streams than the server has threads, their clients reading nothing, leave every other call served.

    On the native transport the Streams' sends wait for room in threads of
    their own, not the pool's (``EventLoopThread``): with the pool as the
    loop's default executor, four such clients took every thread of the test server.
    """
    opened = stop_reading_streams(grpc_address, access_token(user), connections=connections, calls=calls)
    try:
        for _ in range(3):
            assert_still_answering(grpc_address, access_token(user), str(post.id))
    finally:
        close_all(opened)


def stall_every_way_then_probe(address: str, user, post) -> None:
    """Issue 21's drill: 100 requests that never arrive on one connection, 200 silent connections and 20 Streams
    whose clients stop reading, all at once; then 10 probes, each Health/Check and an authenticated Retrieve
    on a new connection, answer within a second (pygrpc-native, with the calls' pool as the loop's default
    executor, failed 9 of 10)."""
    host, port = address.rsplit(":", 1)
    silent = [socket.create_connection((host, int(port))) for _ in range(200)]
    opened = stall_requests(address, connections=1, calls=100)
    opened += stop_reading_streams(address, access_token(user), connections=20, calls=1)
    try:
        for _ in range(10):
            assert_still_answering(address, access_token(user), str(post.id))
    finally:
        close_all(opened)
        for sock in silent:
            sock.close()


def test_every_kind_of_stalled_client_at_once_leaves_health_and_retrieve_answering(
    grpc_address, user, post, posts_past_any_buffer
):
    stall_every_way_then_probe(grpc_address, user, post)


def test_every_kind_of_stalled_client_at_once_spares_two_worker_processes(
    run_server, user, post, posts_past_any_buffer
):
    """The same drill on ``--workers 2`` with 2 threads each: the probes' new connections land on either process."""
    process, address = run_server(
        "--workers", "2", "--max-workers", "2", env={"DATABASE_URL": database_url_of_this_run()}
    )
    stall_every_way_then_probe(address, user, post)
    process.terminate()
    process.wait(timeout=20)


@aio_only("the native transport hands a call to Python once its whole request has arrived: REQUEST_TIMEOUT is not kept")
def test_a_request_that_does_not_arrive_in_time_ends_deadline_exceeded(grpc_address, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "REQUEST_TIMEOUT": 0.3}
    raw = RawConnection(grpc_address)
    try:
        stream_id = raw.open_call(RETRIEVE)
        trailers = wait_for_trailers(raw, stream_id)
        assert trailers.get("grpc-status") == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
        assert "did not arrive" in trailers.get("grpc-message", "")
    finally:
        raw.close()


def test_stalled_clients_do_not_starve_several_worker_processes(run_server, served_database):
    process, address = run_server("--workers", "2", "--max-workers", "2", env=served_database.env)
    opened = stall_requests(address, connections=30, calls=10)
    try:
        for _ in range(6):  # new connections land on either process
            assert_still_answering(address)
    finally:
        close_all(opened)
    process.terminate()
    process.wait(timeout=20)


def test_a_thousand_silent_connections_leave_room_for_more(run_server, served_database):
    """Clients that connect and say nothing cannot use up the descriptors, under a soft limit of 1,024."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files here is {hard}")
    process, address = run_server(env=served_database.env, open_files=1024)
    host, port = address.rsplit(":", 1)
    silent = [socket.create_connection((host, int(port))) for _ in range(1500)]
    try:
        for _ in range(3):
            assert_still_answering(address)
    finally:
        for sock in silent:
            sock.close()
    process.terminate()
    process.wait(timeout=20)


@aio_only("the native transport's handshake timeout is fixed (120 s); it refuses HANDSHAKE_TIMEOUT (test_server)")
def test_a_connection_that_never_completes_its_handshake_is_closed(run_server, served_database):
    process, address = run_server(env={**served_database.env, "TEST_HANDSHAKE_TIMEOUT": "0.5"})
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as silent:
        silent.settimeout(10)
        started = time.monotonic()
        while silent.recv(1024):  # the server's own preface (SETTINGS), then the close
            pass
        assert time.monotonic() - started < 5
    process.terminate()
    process.wait(timeout=20)


@native_only("the native transport's own behaviour, where grpc.aio keeps REQUEST_TIMEOUT")
def test_a_request_that_never_arrives_ends_at_the_clients_deadline_on_native(grpc_address, user, post):
    """Without REQUEST_TIMEOUT (pygrpc-native never hands such a call over), the call costs no thread and no
    coroutine, the server keeps answering, and it ends DEADLINE_EXCEEDED at the deadline its client sent."""
    raw = RawConnection(grpc_address)
    try:
        stream_id = raw.open_call(RETRIEVE, metadata=(("grpc-timeout", "1S"),))
        assert_still_answering(grpc_address, access_token(user), str(post.id))
        trailers = wait_for_trailers(raw, stream_id)
        assert trailers.get("grpc-status") == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    finally:
        raw.close()


# Deadlines and cancellation


def test_a_call_whose_deadline_passes_in_the_queue_runs_no_query(posts_stub, post, monkeypatch):
    """A call still waiting for a thread when its deadline passes ends DEADLINE_EXCEEDED and reads nothing."""
    ran = []
    original = PostService.Retrieve

    def counted_retrieve(self, request, context):
        ran.append(1)
        return original(self, request, context)

    monkeypatch.setattr(PostService, "Retrieve", counted_retrieve)
    release = threading.Event()

    def hold_thread(sender, **kwargs):
        if sender is PostService and not release.is_set():
            release.wait(timeout=5)

    grpc_request_started.connect(hold_thread)
    try:
        # Four slow calls take the four server threads of the test server.
        blockers = [posts_stub.Retrieve.future(posts_pb2.PostRetrieveRequest(id=str(post.id))) for _ in range(4)]
        assert_status(
            lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), timeout=0.5),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        release.set()
        for blocker in blockers:
            assert blocker.result(timeout=10).id == str(post.id)
    finally:
        release.set()
        grpc_request_started.disconnect(hold_thread)
    assert len(ran) == 4  # the late call never reached the handler


def sleeping_queries() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def slow_retrieve(monkeypatch):
    """Retrieve's query sleeps 20 s; yields an event set when the call's request cycle has finished."""

    def slow_queryset(self):
        return post_list().annotate(slow=RawSQL("SELECT 1 FROM pg_sleep(20)", []))

    monkeypatch.setattr(PostService, "get_queryset", slow_queryset)
    monkeypatch.setattr(PostService, "prepared_lookup", False)
    finished = threading.Event()

    def on_finished(sender, **kwargs):
        if sender is PostService:
            finished.set()

    grpc_request_finished.connect(on_finished)
    try:
        yield finished
    finally:
        grpc_request_finished.disconnect(on_finished)


def cancel_while_sleeping(posts_stub, post) -> None:
    """Start a Retrieve without a deadline, wait until its query sleeps in PostgreSQL, cancel it."""
    call = posts_stub.Retrieve.future(posts_pb2.PostRetrieveRequest(id=str(post.id)))
    for _ in range(100):
        if sleeping_queries():
            break
        time.sleep(0.05)
    assert sleeping_queries() == 1, "the call's query never started"
    call.cancel()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="statement_timeout is PostgreSQL's")
def test_postgresql_statement_timeout_follows_the_deadline(posts_stub, post, slow_retrieve):
    assert_status(
        lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), timeout=0.5),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    # The query was stopped by the server, not left running for its 20 s.
    assert slow_retrieve.wait(timeout=2.5)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="statement_timeout is PostgreSQL's")
def test_a_short_deadline_leaves_no_statement_timeout_behind_for_the_next_statements(run_server, user):
    """A Stream without a deadline is not cut short by a short-deadline call that ran on its connection before a batch.

    One pool thread, so one persistent connection, serves both: the Stream's
    first batch, then the List (queued meanwhile), then the Stream's second
    batch, whose query takes a second.
    """
    for index in range(3):
        make_post(owner=user, title=f"row {index}")
    _, address = run_server(
        "--max-workers",
        "1",
        env={"DATABASE_URL": database_url_of_this_run(), "CONN_MAX_AGE": "600", "TEST_SLOW_STREAM_SECONDS": "1"},
    )
    metadata = auth_metadata(user)
    with grpc.insecure_channel(address) as channel:
        stub = posts_pb2_grpc.PostControllerStub(channel)
        stream = stub.Stream(posts_pb2.PostStreamRequest(batch_size=1), metadata=metadata)  # no deadline
        time.sleep(0.3)  # its first batch is running
        short = stub.List.future(posts_pb2.PostListRequest(page_size=1), metadata=metadata, timeout=1.5)
        titles = [row.title for batch in stream for row in batch.posts]
        assert short.result().posts  # the short call ran, between the Stream's batches
    assert sorted(titles) == ["row 0", "row 1", "row 2"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="statement_timeout is PostgreSQL's")
def test_a_call_without_a_deadline_runs_no_statement_longer_than_query_timeout(
    posts_stub, post, slow_retrieve, settings
):
    """A client that sends no deadline cannot hold a thread for as long as its query would run."""
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "QUERY_TIMEOUT": 0.3}
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "limit on a query's time" in error.value.details()
    assert time.monotonic() - started < 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL query stopped by its cancel request")
def test_a_call_cancelled_by_its_client_stops_its_query(posts_stub, post, slow_retrieve, settings):
    """The server sends PostgreSQL the cancel request of the call's connection: the query does not run on."""
    if connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        pytest.skip("behind a transaction pooler no cancel request is sent (the next test)")
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "QUERY_TIMEOUT": 30}

    cancel_while_sleeping(posts_stub, post)

    assert slow_retrieve.wait(timeout=3), "the cancelled call's query ran on"
    assert sleeping_queries() == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statement timeout")
def test_behind_a_transaction_pooler_a_cancelled_calls_query_ends_at_its_statement_timeout(
    posts_stub, post, slow_retrieve, settings
):
    """With DISABLE_SERVER_SIDE_CURSORS (PgBouncer's transaction mode) no cancel request is sent.

    The pooler would forward it to whatever server connection the client holds when it arrives:
    by then possibly another client's. ``QUERY_TIMEOUT`` (here 2 s) stops the query instead.
    """
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "QUERY_TIMEOUT": 2}
    database = connection.settings_dict
    database["DISABLE_SERVER_SIDE_CURSORS"] = True
    try:
        cancel_while_sleeping(posts_stub, post)
        time.sleep(0.5)
        assert sleeping_queries() == 1  # not cancelled
        assert slow_retrieve.wait(timeout=5), "the statement timeout did not end the query"
    finally:
        database["DISABLE_SERVER_SIDE_CURSORS"] = False


# The access log


@pytest.fixture
def access_log(caplog):
    caplog.set_level(logging.INFO, logger="grpc_ext.access")
    return caplog


def logged_codes(caplog, method: str) -> list[str]:
    return [
        record.getMessage().split(" code=")[1].split()[0]
        for record in caplog.records
        if record.name == "grpc_ext.access" and f"method={method} " in record.getMessage()
    ]


def wait_for_log(caplog, method: str, count: int = 1) -> list[str]:
    for _ in range(100):
        codes = logged_codes(caplog, method)
        if len(codes) >= count:
            return codes
        threading.Event().wait(0.05)
    return logged_codes(caplog, method)


def test_access_log_records_ok_and_errors(access_log, posts_stub, post):
    posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)))
    assert_status(lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id="x")), grpc.StatusCode.INVALID_ARGUMENT)
    assert wait_for_log(access_log, RETRIEVE, 2) == ["OK", "INVALID_ARGUMENT"]


def test_access_log_records_deadline_exceeded_not_ok(access_log, posts_stub, post, monkeypatch):
    release = threading.Event()
    original = PostService.Retrieve

    def slow_retrieve(self, request, context):
        release.wait(timeout=5)
        return original(self, request, context)

    monkeypatch.setattr(PostService, "Retrieve", slow_retrieve)
    try:
        assert_status(
            lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), timeout=0.3),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    finally:
        release.set()
    assert wait_for_log(access_log, RETRIEVE) == ["DEADLINE_EXCEEDED"]


def test_access_log_records_a_cancelled_stream_as_cancelled(access_log, posts_stub, posts_to_stream, monkeypatch):
    # The server holds the stream after its first batch, so it cannot finish (OK) before the cancel arrives.
    release = threading.Event()
    original = PostService.Stream

    def held_stream(self, request, context):
        responses = original(self, request, context)
        yield next(responses)
        release.wait(timeout=5)
        yield from responses

    monkeypatch.setattr(PostService, "Stream", held_stream)
    try:
        call = posts_stub.Stream(posts_pb2.PostStreamRequest(batch_size=5))
        assert len(next(call).posts) == 5
        call.cancel()
        assert wait_for_log(access_log, STREAM) == ["CANCELLED"]
    finally:
        release.set()


# SIGTERM under load


class LoadClient(threading.Thread):
    """Create posts over a connection of its own until told to stop; note every status and acknowledged id."""

    def __init__(self, address: str, token: str, index: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.address, self.token, self.index, self.stop = address, token, index, stop
        self.codes: dict[str, int] = {}
        self.acknowledged: list[str] = []
        self.sequence: list = []

    def run(self) -> None:
        metadata = (("authorization", f"Bearer {self.token}"),)
        with grpc.insecure_channel(self.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            number = 0
            while not self.stop.is_set():
                number += 1
                request = posts_pb2.PostCreateRequest(title=f"load {self.index}-{number}", description="x")
                try:
                    self.acknowledged.append(stub.Create(request, metadata=metadata, timeout=5).id)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                self.codes[code.name] = self.codes.get(code.name, 0) + 1
                if not self.sequence or self.sequence[-1][0] != code.name:
                    self.sequence.append([code.name, 0])
                self.sequence[-1][1] += 1


def sign_up(address: str) -> str:
    """Create an account on the server under test and return its access token."""
    with grpc.insecure_channel(address) as channel:
        users = users_pb2_grpc.UserControllerStub(channel)
        users.Create(users_pb2.UserCreateRequest(email="load@example.com", password="a long pass phrase"), timeout=5)
        auth = auth_pb2_grpc.AuthControllerStub(channel)
        login = auth.Login(auth_pb2.LoginRequest(email="load@example.com", password="a long pass phrase"), timeout=5)
        return login.access


def stored_post_ids(database: Path) -> set[str]:
    with sqlite3.connect(database) as db:
        return {str(uuid.UUID(row[0])) for row in db.execute("SELECT id FROM posts_post")}


def test_sigterm_under_load_finishes_accepted_calls_and_refuses_new_ones(run_server, served_database):
    process, address = run_server("--grace", "5", env=served_database.env)
    token = sign_up(address)
    stop = threading.Event()
    clients = [LoadClient(address, token, index, stop) for index in range(6)]
    for client in clients:
        client.start()
    while sum(len(client.acknowledged) for client in clients) < 50:
        threading.Event().wait(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    stop.set()
    for client in clients:
        client.join(timeout=10)
    codes: dict[str, int] = {}
    for client in clients:
        for name, count in client.codes.items():
            codes[name] = codes.get(name, 0) + count
    assert process.returncode == 0, output
    # Accepted calls finished (OK); later ones were refused UNAVAILABLE, as is a closed port. Nothing else.
    assert set(codes) <= {"OK", "UNAVAILABLE"}, (codes, [client.sequence for client in clients])
    assert codes.get("UNAVAILABLE", 0) > 0, codes
    acknowledged = {post_id for client in clients for post_id in client.acknowledged}
    assert acknowledged <= stored_post_ids(served_database.path)


def test_a_stream_gets_the_grace_period_then_ends_unavailable(posts_to_stream, user, monkeypatch):
    """Draining lets a Stream run for the grace period, then ends it with a clean, retryable status."""
    batch_taken, release = threading.Event(), threading.Event()
    read_batches = PostService.get_stream_responses

    def slow_batches(self, queryset, size):
        for number, batch in enumerate(read_batches(self, queryset, size)):
            if number == 1:  # the second batch takes longer than the grace period
                batch_taken.set()
                release.wait(timeout=10)
            yield batch

    monkeypatch.setattr(PostService, "get_stream_responses", slow_batches)
    server = serve_in_background(max_workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = posts_pb2_grpc.PostControllerStub(channel)
            call = stub.Stream(
                posts_pb2.PostStreamRequest(batch_size=5), metadata=(("authorization", f"Bearer {access_token(user)}"),)
            )
            assert len(next(call).posts) == 5
            assert batch_taken.wait(timeout=5)
            stopped = server.stop(0.5)
            with pytest.raises(grpc.RpcError) as excinfo:
                list(call)
            assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shut down" in excinfo.value.details()
    finally:
        release.set()
        assert server.stop(None).wait(timeout=10)
    assert stopped.is_set()
