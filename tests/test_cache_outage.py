"""A cache (Redis) that goes down or hangs: calls that need it fail fast and clearly, the others go on.

Each test runs a Redis server of its own on a free port, so that it can stop
it (killed) or hang it (SIGSTOP) without touching the machine's.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import redis
from django.core.cache import cache
from django.test import Client, override_settings

from grpc_ext.client import Client as GrpcClient
from grpc_ext.client import ClientError
from protos import auth_pb2, auth_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc
from tests.conftest import free_port
from tests.support.helpers import aio_only, auth_metadata, database_url_of_this_run, native_only

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")

CACHE_DOWN = "The cache is unavailable; retry later."


class PrivateRedis:
    """A ``redis-server`` process of the test's own, that it may stop, restart, hang and wake."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the test's redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def hang(self) -> None:
        """Stop the process without closing its port: connections open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def wake(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.wake()
    server.stop()


def redis_cache(url: str) -> dict:
    """The project's Redis cache settings (``demo.settings.cache_from_url``) on ``url``."""
    from demo.settings import cache_from_url

    return {"default": cache_from_url(url)}


def test_rest_login_and_signup_answer_503_json_with_retry_after_while_the_cache_is_down(private_redis, db):
    with override_settings(CACHES=redis_cache(private_redis.url)):
        client = Client()
        credentials = {"email": "nobody@example.com", "password": "not-the-password"}
        assert client.post("/api/users/login/", credentials, content_type="application/json").status_code == 401
        private_redis.stop()
        for path in ("/api/users/login/", "/api/users/signup/"):
            response = client.post(path, credentials, content_type="application/json")
            assert response.status_code == 503, response.content[:200]
            assert response["Content-Type"] == "application/json"
            assert response.json() == {"detail": CACHE_DOWN}
            assert int(response["Retry-After"]) >= 1
        private_redis.start()
        for _ in range(40):  # the cache is tried again within a second, and the calls are back
            response = client.post("/api/users/login/", credentials, content_type="application/json")
            if response.status_code != 503:
                break
            time.sleep(0.1)
        assert response.status_code == 401
        cache.close()


def test_a_hung_cache_holds_no_thread_of_the_pool_and_calls_recover_by_themselves(private_redis, run_server, post):
    """Twelve logins against a Redis that does not answer: UNAVAILABLE, and an unrelated Retrieve still answers."""
    _, address = run_server(env={"DATABASE_URL": database_url_of_this_run(), "CACHE_URL": private_redis.url})
    login = auth_pb2.LoginRequest(email="nobody@example.com", password="not-the-password")
    with grpc.insecure_channel(address) as channel:
        auth = auth_pb2_grpc.AuthControllerStub(channel)
        posts = posts_pb2_grpc.PostControllerStub(channel)
        assert_code(lambda: auth.Login(login, timeout=5), grpc.StatusCode.UNAUTHENTICATED)
        private_redis.hang()
        with ThreadPoolExecutor(max_workers=12) as callers:
            logins = [callers.submit(call_code, lambda: auth.Login(login, timeout=10)) for _ in range(12)]
            time.sleep(0.2)
            retrieved = posts.Retrieve(
                posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=auth_metadata(post.owner), timeout=3
            )
            assert retrieved.id == str(post.id)
            outcomes = [future.result() for future in logins]
        assert {code for code, _ in outcomes} == {grpc.StatusCode.UNAVAILABLE}, outcomes
        assert {details for _, details in outcomes} == {CACHE_DOWN}
        private_redis.wake()
        for _ in range(40):
            code, _ = call_code(lambda: auth.Login(login, timeout=5))
            if code != grpc.StatusCode.UNAVAILABLE:
                break
            time.sleep(0.1)
        assert code == grpc.StatusCode.UNAUTHENTICATED


@aio_only("pygrpc-native cannot send the grpc-retry-pushback-ms trailer (docs: transports, pygrpc-native)")
def test_a_signup_the_client_retries_while_the_cache_is_down_ends_unavailable_with_its_message(
    private_redis, run_server, transactional_db
):
    """The client's retry policy waits the server's RetryInfo delay, and gives up with the server's status
    when no retry fits in the deadline, instead of retrying until the deadline ends the call DEADLINE_EXCEEDED."""
    _, address = run_server(env={"DATABASE_URL": database_url_of_this_run(), "CACHE_URL": private_redis.url})
    private_redis.stop()
    signup = users_pb2.UserCreateRequest(email="new@example.com", password="a-long-password-123")
    pushbacks = {}
    with grpc.insecure_channel(address) as channel:  # no retry policy: every answer is seen
        create = users_pb2_grpc.UserControllerStub(channel).Create
        for timeout in (30, 1.8):
            with pytest.raises(grpc.RpcError) as raised:
                create(signup, timeout=timeout)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            pushbacks[timeout] = dict(raised.value.trailing_metadata()).get("grpc-retry-pushback-ms")
    # The RetryInfo delay; no retry when the delay and time for its answer (1 s) do not fit in the deadline.
    assert pushbacks == {30: "1000", 1.8: "-1"}
    with GrpcClient(address, timeout=1.5) as client:
        with pytest.raises(ClientError) as raised:
            client.users.Create(email="new@example.com", password="a-long-password-123")
    assert (raised.value.code, raised.value.details) == (grpc.StatusCode.UNAVAILABLE, CACHE_DOWN)


@native_only("the native transport's own answer: without the retry pushback aio sends")
def test_on_native_an_unavailable_with_retry_info_ends_at_once_without_a_pushback(
    private_redis, run_server, transactional_db
):
    """pygrpc-native refuses reserved trailing metadata and would never end the call: it goes without the trailer."""
    _, address = run_server(env={"DATABASE_URL": database_url_of_this_run(), "CACHE_URL": private_redis.url})
    private_redis.stop()
    signup = users_pb2.UserCreateRequest(email="new@example.com", password="a-long-password-123")
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            users_pb2_grpc.UserControllerStub(channel).Create(signup, timeout=30)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.UNAVAILABLE, CACHE_DOWN)
    assert "grpc-retry-pushback-ms" not in dict(raised.value.trailing_metadata())


def call_code(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def assert_code(call, code: grpc.StatusCode) -> None:
    assert call_code(call)[0] == code
