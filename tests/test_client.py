"""grpc_ext.client through a real channel: fields as keywords, tokens, deadlines, retries, pages, errors, aio."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from rest_framework_simplejwt.tokens import AccessToken

from grpc_ext.client import KEEPALIVE_OPTIONS, AsyncClient, Client, ClientError, discover_services
from grpc_ext.server.transport import server_options
from grpc_ext.testing import access_token, assert_status, bad_request_fields, start_live_server
from posts.models import Post
from protos import auth_pb2, auth_pb2_grpc, posts_pb2
from tests.support.factories import PASSWORD, make_post
from tests.support.typesapp.models import Sample
from tests.test_proto_types import samples_address, samples_protos  # noqa: F401 - fixtures
from tests.test_server import certificates  # noqa: F401 - the fixture

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def client(grpc_address, user):
    """A client logged in as ``user`` with their password, as a service would be."""
    with Client(grpc_address, timeout=5.0) as client:
        client.login(user.email, PASSWORD)
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Fields as keywords, field masks, errors


def test_the_services_are_found_in_the_generated_modules_not_listed_by_hand():
    services = discover_services("protos")

    assert {"auth", "posts", "users"} <= set(services)
    assert services["posts"].full_name == posts_pb2.DESCRIPTOR.services_by_name["PostController"].full_name
    assert {"List", "Stream", "Retrieve", "Create", "Update", "PartialUpdate", "Destroy"} <= set(
        services["posts"].methods
    )


def test_create_retrieve_and_partial_update_take_the_request_fields_as_keywords(client, user):
    post = client.posts.Create(title="Hello", description="From Python")

    assert isinstance(post, posts_pb2.Post)
    assert client.posts.Retrieve(id=post.id).title == "Hello"
    renamed = client.posts.PartialUpdate(id=post.id, title="Renamed")

    # The mask holds the keywords given: the description is left as it was.
    assert (renamed.title, renamed.description) == ("Renamed", "From Python")
    row = Post.objects.get(pk=post.id)
    assert (row.title, row.description, row.owner_id) == ("Renamed", "From Python", user.pk)


def test_partial_update_with_none_puts_the_field_in_the_mask_unset(client, user):
    post = client.posts.Create(title="Hello", description="Some text")

    client.posts.PartialUpdate(id=post.id, description=None)

    row = Post.objects.get(pk=post.id)
    assert (row.title, row.description) == ("Hello", "")


def test_an_unknown_keyword_is_a_type_error_before_any_call(transactional_db):
    # Nothing listens on this port: a call would fail with UNAVAILABLE, not TypeError.
    with Client(f"127.0.0.1:{free_port()}", timeout=1.0) as nowhere:
        with pytest.raises(TypeError, match="'titel'"):
            nowhere.posts.Create(titel="Hello")
        with pytest.raises(TypeError, match="'ownr'"):
            nowhere.posts.iterate(owner="me", ownr="x")
        with pytest.raises(TypeError, match="'batch'"):
            nowhere.posts.stream(batch=3)
    assert Post.objects.count() == 0


def test_field_violations_come_from_the_bad_request_in_the_trailers(client):
    with pytest.raises(ClientError) as excinfo:
        client.posts.Create(title="")
    error = excinfo.value

    assert error.code == INVALID_ARGUMENT
    assert error.field_violations == {"title": ["This field may not be blank."]}
    assert "blank" in error.details
    # Still a grpc.RpcError, answering as grpc's own errors do.
    assert isinstance(error, grpc.RpcError)
    assert error.code() == INVALID_ARGUMENT
    assert bad_request_fields(error) == ["title"]
    assert Post.objects.count() == 0


def test_every_failed_call_raises_client_error_with_its_status(client, transactional_db):
    error = assert_status(
        lambda: client.posts.Retrieve(id="00000000-0000-0000-0000-000000000000"), grpc.StatusCode.NOT_FOUND
    )

    assert isinstance(error, ClientError)
    assert error.field_violations == {}


# Pages and streams


def test_iterate_walks_every_page_following_page_token(client, user):
    created = {client.posts.Create(title=f"Post {index}").id for index in range(7)}
    make_post(title="Someone else's")

    mine = [post.id for post in client.posts.iterate(page_size=3, owner="me")]

    # Seven rows in pages of three: three pages, each row once.
    assert sorted(mine) == sorted(created)
    assert len([post for post in client.posts.iterate(page_size=2)]) == 8


def test_stream_flattens_the_batches(client, user):
    created = {make_post(owner=user).id for _ in range(5)}

    streamed = [post.id for post in client.posts.stream(batch_size=2)]

    assert sorted(streamed) == sorted(str(pk) for pk in created)
    batches = list(client.posts.Stream(batch_size=2))
    assert [len(batch.posts) for batch in batches] == [2, 2, 1]


# Tokens


def test_without_login_a_call_is_unauthenticated(grpc_address, transactional_db):
    with Client(grpc_address) as anonymous:
        error = assert_status(lambda: anonymous.posts.List(), UNAUTHENTICATED)
    assert isinstance(error, ClientError)


def test_a_token_given_is_used_as_is(grpc_client, user):
    signed_in = grpc_client(user)
    assert signed_in.posts.Create(title="With a token").title == "With a token"

    expired = AccessToken.for_user(user)
    expired.set_exp(lifetime=timedelta(seconds=-1))
    with Client(signed_in.target, token=str(expired)) as stale:
        assert_status(lambda: stale.posts.List(), UNAUTHENTICATED, details_contain="expired")


@pytest.fixture
def short_access_tokens(monkeypatch, settings):
    """Access tokens that live one second (simplejwt reads the lifetime into the token class at import)."""
    lifetime = timedelta(seconds=1)
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "ACCESS_TOKEN_LIFETIME": lifetime}
    monkeypatch.setattr(AccessToken, "lifetime", lifetime)
    return lifetime


def test_an_expired_access_token_is_refreshed_before_the_call(grpc_address, user, short_access_tokens):
    with Client(grpc_address, timeout=5.0) as client:
        client.login(user.email, PASSWORD)
        first_access, first_refresh = client.access_token, client.refresh_token
        time.sleep(1.5)

        post = client.posts.Create(title="After expiry")

        assert Post.objects.get(pk=post.id).owner_id == user.pk
        assert (client.access_token, client.refresh_token) != (first_access, first_refresh)
    # The old access token had expired, and the old refresh token was rotated out.
    with grpc.insecure_channel(grpc_address) as channel:
        metadata = (("authorization", f"Bearer {first_access}"),)
        stub = auth_pb2_grpc.AuthControllerStub(channel)
        assert_status(lambda: stub.Refresh(auth_pb2.RefreshRequest(refresh=first_refresh)), UNAUTHENTICATED)
        posts = Client(grpc_address, token=first_access).posts
        assert_status(lambda: posts.List(metadata=metadata), UNAUTHENTICATED)


def test_concurrent_calls_after_expiry_refresh_once(grpc_address, user, short_access_tokens):
    """Refresh tokens rotate: a second refresh with the same one would be refused as blacklisted."""
    post = make_post(owner=user)
    with Client(grpc_address, timeout=5.0) as client:
        client.login(user.email, PASSWORD)
        time.sleep(1.5)
        with futures.ThreadPoolExecutor(max_workers=6) as pool:
            titles = list(pool.map(lambda _: client.posts.Retrieve(id=str(post.pk)).title, range(6)))

    assert titles == [post.title] * 6


def test_async_client_refreshes_an_expired_access_token(grpc_address, user, short_access_tokens):
    post = make_post(owner=user)

    async def session() -> tuple[str, bool]:
        async with AsyncClient(grpc_address, timeout=5.0) as client:
            await client.login(user.email, PASSWORD)
            first_refresh = client.refresh_token
            await asyncio.sleep(1.5)
            retrieved = await client.posts.Retrieve(id=str(post.pk))
            return retrieved.title, client.refresh_token != first_refresh

    assert asyncio.run(session()) == (post.title, True)


def test_a_rate_limited_call_says_when_to_retry(grpc_address, user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "1/minute"}}
    with Client(grpc_address) as client:
        client.login(user.email, PASSWORD)
        error = assert_status(lambda: client.login(user.email, PASSWORD), grpc.StatusCode.RESOURCE_EXHAUSTED)

    assert 0 < error.retry_delay <= 60


def forged_access_token(user) -> str:
    """A well-formed access token for ``user``, good for five minutes, signed with a key the server does not have."""
    return jwt.encode(AccessToken.for_user(user).payload, "not-the-signing-key-of-this-server", algorithm="HS256")


def test_an_access_token_the_server_refuses_is_refreshed_once_and_the_call_retried(client, user):
    # A token the client cannot tell is bad (it expires in five minutes) but the server refuses:
    # the server's view wins, as after a clock skew or a key rotation.
    refresh_before = client.refresh_token
    client.set_tokens(forged_access_token(user), refresh_before)

    post = client.posts.Create(title="After a refusal")
    streamed = list(client.posts.stream())

    assert Post.objects.get(pk=post.id).title == "After a refusal"
    assert [p.id for p in streamed] == [post.id]
    assert client.refresh_token != refresh_before


def test_a_refused_refresh_token_ends_in_unauthenticated(client, user):
    client.set_tokens("not-a-jwt", "not-a-jwt-either")

    assert_status(lambda: client.posts.List(), UNAUTHENTICATED)


def test_logout_blacklists_the_refresh_token(client, grpc_address):
    refresh = client.refresh_token

    client.logout()

    assert client.access_token is None
    assert_status(lambda: client.posts.List(), UNAUTHENTICATED)
    with grpc.insecure_channel(grpc_address) as channel:
        stub = auth_pb2_grpc.AuthControllerStub(channel)
        assert_status(
            lambda: stub.Refresh(auth_pb2.RefreshRequest(refresh=refresh)),
            UNAUTHENTICATED,
            details_contain="blacklisted",
        )


# Deadlines and retries


class SlowPosts(grpc.GenericRpcHandler):
    """``posts.PostController/Retrieve`` that takes ``delay`` seconds and notes the deadline each call had."""

    def __init__(self, delay: float):
        self.delay = delay
        self.time_remaining: list[float | None] = []

    def service(self, handler_call_details):
        if not handler_call_details.method.endswith("/Retrieve"):
            return None

        def retrieve(request, context):
            self.time_remaining.append(context.time_remaining())
            time.sleep(self.delay)
            return posts_pb2.Post(id=request.id)

        return grpc.unary_unary_rpc_method_handler(
            retrieve, posts_pb2.PostRetrieveRequest.FromString, posts_pb2.Post.SerializeToString
        )


@pytest.fixture
def slow_server():
    handler = SlowPosts(delay=1.0)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield handler, f"127.0.0.1:{port}"
    server.stop(None).wait()


def test_every_call_has_the_clients_deadline_or_its_own(slow_server):
    handler, address = slow_server
    with Client(address, timeout=0.3) as client:
        started = time.monotonic()
        assert_status(lambda: client.posts.Retrieve(id="x"), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 1.0
        assert client.posts.Retrieve(id="y", timeout=5.0).id == "y"

    first, second = handler.time_remaining
    assert first is not None and 0 < first <= 0.35
    assert second is not None and 1.0 < second <= 5.05


def down_then_up(port: int) -> tuple[threading.Thread, threading.Event, list]:
    """Cut the first connection to ``port`` before any HTTP/2 frame, then serve every service there.

    The first attempt of a call fails with UNAVAILABLE; only a retry can reach the server.
    """
    first_attempt, started = threading.Event(), []

    def run():
        with socket.create_server(("127.0.0.1", port)) as listener:
            listener.settimeout(10)
            connection, _ = listener.accept()
            connection.close()
        first_attempt.set()
        started.append(start_live_server(f"127.0.0.1:{port}"))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, first_attempt, started


def test_a_read_is_retried_until_a_briefly_unavailable_server_is_back(transactional_db, user):
    post = make_post(owner=user)
    port = free_port()
    thread, first_attempt, started = down_then_up(port)
    try:
        with Client(f"127.0.0.1:{port}", timeout=10.0, token=access_token(user)) as client:
            retrieved = client.posts.Retrieve(id=str(post.pk))
        assert first_attempt.is_set()
        assert retrieved.title == post.title
    finally:
        thread.join(timeout=10)
        for _, stop in started:
            stop()


@pytest.mark.skipif(
    "request_id" not in posts_pb2.PostCreateRequest.DESCRIPTOR.fields_by_name, reason="Create has no request_id"
)
def test_a_create_with_a_request_id_is_retried_and_writes_once(transactional_db, user):
    port = free_port()
    thread, first_attempt, started = down_then_up(port)
    try:
        with Client(f"127.0.0.1:{port}", timeout=10.0, token=access_token(user)) as client:
            created = client.posts.Create(title="Once")
        assert first_attempt.is_set()
        assert list(Post.objects.values_list("pk", "title")) == [(uuid.UUID(created.id), "Once")]
    finally:
        thread.join(timeout=10)
        for _, stop in started:
            stop()


def test_a_write_without_a_request_id_is_not_retried(transactional_db, user):
    post = make_post(owner=user, title="Before")
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(5)
        client = Client(f"127.0.0.1:{port}", timeout=5.0, token=access_token(user))
        with ThreadedCall(lambda: client.posts.PartialUpdate(id=str(post.pk), title="After")) as call:
            connection, _ = listener.accept()
            connection.close()
        client.close()

    assert isinstance(call.error, ClientError) and call.error.code == UNAVAILABLE
    assert Post.objects.get(pk=post.pk).title == "Before"


class ThreadedCall:
    """Run a call in a thread while the test plays the server; keep its result or error."""

    def __init__(self, call):
        self.call, self.error, self.result = call, None, None
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            self.result = self.call()
        except Exception as exc:  # noqa: BLE001 - kept for the assertion
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.thread.join(timeout=10)


# TLS


def test_tls_with_root_certificates(transactional_db, user, certificates):  # noqa: F811 - the fixture
    from grpc_ext.server.transport import build_server

    server = build_server(
        "127.0.0.1:0", tls_cert=certificates / "server.pem", tls_key=certificates / "server.key", transport="aio"
    )
    server.start()
    try:
        post = make_post(owner=user)
        token = str(AccessToken.for_user(user))
        roots = (certificates / "ca.pem").read_bytes()
        with Client(f"127.0.0.1:{server.port}", root_certificates=roots, token=token) as client:
            assert client.posts.Retrieve(id=str(post.pk)).title == post.title
        with Client(f"127.0.0.1:{server.port}", timeout=2.0, token=token) as plaintext:
            # A write without a request_id is tried once: the failed handshake is its answer.
            assert_status(lambda: plaintext.posts.PartialUpdate(id=str(post.pk), title="Plaintext"), UNAVAILABLE)
        assert Post.objects.get(pk=post.pk).title == post.title
    finally:
        server.stop(None).wait()


# The async twin


def test_async_client_has_the_same_surface(grpc_address, user):
    make_post(owner=user, title="Existing")

    async def session() -> dict[str, object]:
        async with AsyncClient(grpc_address, timeout=5.0) as client:
            await client.login(user.email, PASSWORD)
            post = await client.posts.Create(title="Async", description="From aio")
            retrieved = await client.posts.Retrieve(id=post.id)
            renamed = await client.posts.PartialUpdate(id=post.id, title="Renamed")
            pages = [p.title async for p in client.posts.iterate(page_size=1, owner="me")]
            streamed = [p.title async for p in client.posts.stream(batch_size=1)]
            try:
                await client.posts.Create(title="")
            except ClientError as error:
                violations = error.field_violations
            try:
                client.posts.Create(titel="x")
            except TypeError as error:
                type_error = str(error)
            client.set_tokens(forged_access_token(user), client.refresh_token)
            after_refusal = await client.posts.Retrieve(id=post.id)
            await client.logout()
            return {
                "retrieved": retrieved.description,
                "renamed": (renamed.title, renamed.description),
                "pages": sorted(pages),
                "streamed": sorted(streamed),
                "violations": violations,
                "type_error": type_error,
                "after_refusal": after_refusal.title,
            }

    seen = asyncio.run(session())

    assert seen["retrieved"] == "From aio"
    assert seen["renamed"] == ("Renamed", "From aio")
    assert seen["pages"] == ["Existing", "Renamed"]
    assert seen["streamed"] == ["Existing", "Renamed"]
    assert seen["violations"] == {"title": ["This field may not be blank."]}
    assert "'titel'" in seen["type_error"]
    assert seen["after_refusal"] == "Renamed"
    assert Post.objects.filter(owner=user).count() == 2


def test_async_deadline(slow_server):
    handler, address = slow_server

    async def call() -> grpc.StatusCode:
        async with AsyncClient(address, timeout=0.3) as client:
            try:
                await client.posts.Retrieve(id="x")
            except ClientError as error:
                return error.code()
        raise AssertionError("the call did not fail")

    assert asyncio.run(call()) == grpc.StatusCode.DEADLINE_EXCEEDED


# The pytest plugin's client factory, as docs/guides/testing.md uses it


def test_the_plugin_makes_clients_signed_in_as_a_user_or_anonymous(grpc_client, user):
    client = grpc_client(user)

    post = client.posts.Create(title="Dune")

    assert Post.objects.get(pk=post.id).owner_id == user.pk
    error = assert_status(lambda: client.posts.Create(title=""), INVALID_ARGUMENT)
    assert error.field_violations == {"title": ["This field may not be blank."]}
    assert_status(lambda: grpc_client().posts.Retrieve(id=post.id), UNAUTHENTICATED)


# A new app's service, with no client code


def test_a_new_apps_service_is_called_with_no_client_code(samples_address, samples_protos, transactional_db):  # noqa: F811
    happened_at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    with Client(samples_address, protos="typesprotos") as client:
        assert "samples" in client.services
        created = client.samples.Create(name="first", count=3, happened_at=happened_at, payload={"a": [1, "b"]})
        for index in range(4):
            client.samples.Create(name=f"more {index}")
        renamed = client.samples.PartialUpdate(id=created.id, nickname="nick")
        names = sorted(sample.name for sample in client.samples.iterate(page_size=2))

    assert (renamed.name, renamed.nickname, renamed.count) == ("first", "nick", 3)
    assert renamed.happened_at.ToDatetime(tzinfo=UTC) == happened_at
    assert names == ["first", "more 0", "more 1", "more 2", "more 3"]
    row = Sample.objects.get(pk=created.id)
    assert (row.nickname, row.payload) == ("nick", {"a": [1, "b"]})


def test_the_clients_keepalive_matches_the_servers_and_is_one_it_accepts():
    """A client pinging more often than the server allows is sent GOAWAY "too_many_pings"."""
    server = dict(server_options(reuse_port=False))
    client = dict(KEEPALIVE_OPTIONS)

    assert client["grpc.keepalive_time_ms"] == server["grpc.keepalive_time_ms"]
    assert client["grpc.keepalive_timeout_ms"] == server["grpc.keepalive_timeout_ms"]
    least_interval = server.get("grpc.http2.min_recv_ping_interval_without_data_ms", 300_000)
    assert client["grpc.keepalive_time_ms"] >= least_interval
    if not server.get("grpc.keepalive_permit_without_calls", 0):
        assert client["grpc.keepalive_permit_without_calls"] == 0
