"""The database goes away under a running server, then comes back: codes, health, logs and recovery.

``grpcrunserver`` runs as an operator runs it (a subprocess, persistent
connections) on the test database. On PostgreSQL it reaches the database
through a TCP proxy the test cuts, so the database server itself is never
stopped; on SQLite the database file is replaced by one that is not a
database, which is what an outage is for a local file (a lost disk, a bad
restore, wrong permissions).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from django.db import connection
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import auth_pb2, auth_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc
from tests.support.factories import PASSWORD
from tests.support.helpers import assert_status, auth_metadata
from tests.support.tcp_proxy import TcpProxy

BASE_DIR = Path(__file__).resolve().parent.parent
HEALTH_NAMES = [
    "",
    posts_pb2.DESCRIPTOR.services_by_name["PostController"].full_name,
    users_pb2.DESCRIPTOR.services_by_name["UserController"].full_name,
    auth_pb2.DESCRIPTOR.services_by_name["AuthController"].full_name,
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
#: Seconds health may take to follow the database: "within a few seconds" (probes run every second).
HEALTH_DEADLINE = 10


@dataclass
class Outage:
    """How a server reaches the test database, and how to take the database away and give it back."""

    database_url: str
    cut: Callable[[], None]
    restore: Callable[[], None]
    env: dict[str, str]
    #: Make new connections wait forever (PostgreSQL only).
    hang: Callable[[], None] | None = None
    #: As ``hang``, and drop what open connections send (PostgreSQL only).
    silence: Callable[[], None] | None = None


@pytest.fixture
def outage(post, tmp_path) -> Iterator[Outage]:
    """The way to the test database (holding ``post`` and its owner) and the means to cut it."""
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        proxy = TcpProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432)))
        user = settings["USER"] or "postgres"
        url = f"postgres://{user}@127.0.0.1:{proxy.port}/{settings['NAME']}"
        yield Outage(url, proxy.cut, proxy.restore, {}, hang=proxy.hang, silence=proxy.silence)
        proxy.close()
    elif connection.vendor == "sqlite":
        # The test database is in memory; the server gets a copy in a file.
        path, aside, broken = tmp_path / "db.sqlite3", tmp_path / "aside.sqlite3", tmp_path / "broken.sqlite3"
        connection.ensure_connection()
        with sqlite3.connect(path) as copy:
            connection.connection.backup(copy)
        broken.write_bytes(b"this is not a database " * 512)

        def cut() -> None:
            os.replace(path, aside)
            shutil.copy(broken, path)

        # A connection kept open would go on reading the file it opened; SQLite's usual
        # setting (a connection per request) opens the path again, as a restarted server would.
        yield Outage(f"sqlite:///{path}", cut, lambda: os.replace(aside, path), {"CONN_MAX_AGE": "0"})
    else:
        pytest.skip(f"no outage drill for {connection.vendor}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def health(channel: grpc.Channel, name: str) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status


def wait_for_health(channel: grpc.Channel, status: int) -> float:
    """Wait until the server and every service report ``status``; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < HEALTH_DEADLINE:
        if all(health(channel, name) == status for name in HEALTH_NAMES):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"health did not become {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")


@pytest.fixture
def database_server(outage, request, tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``grpcrunserver`` on the outage's database, with the environment of the test's ``server_env`` mark."""
    marker = request.node.get_closest_marker("server_env")
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        **outage.env,
        "DJANGO_SETTINGS_MODULE": "tests.support.server_settings",
        "DATABASE_URL": outage.database_url,
        "LOG_LEVEL": "INFO",
        # Rate limits of its own: the project's cache directory keeps counting across runs.
        "CACHE_LOCATION": str(tmp_path / "cache"),
        **(marker.kwargs if marker else {}),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcrunserver", address, "--grace", "2"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(address) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=20)
        yield address, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=20)


def server_output(process: subprocess.Popen) -> str:
    """Stop the server and return everything it logged."""
    process.terminate()
    output, _ = process.communicate(timeout=20)
    return output


def test_outage_is_unavailable_not_serving_and_recovers_without_a_restart(outage, database_server, user, post):
    address, process = database_server
    metadata = auth_metadata(user)
    with grpc.insecure_channel(address) as channel:
        posts = posts_pb2_grpc.PostControllerStub(channel)
        users = users_pb2_grpc.UserControllerStub(channel)
        auth = auth_pb2_grpc.AuthControllerStub(channel)
        retrieve = lambda: posts.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=metadata)  # noqa: E731
        assert retrieve().title == post.title
        assert all(health(channel, name) == SERVING for name in HEALTH_NAMES)

        # The probe notices with no RPC failing first.
        outage.cut()
        wait_for_health(channel, NOT_SERVING)
        calls = {
            "Retrieve": retrieve,
            "List": lambda: posts.List(posts_pb2.PostListRequest(), metadata=metadata),
            "Stream": lambda: list(posts.Stream(posts_pb2.PostStreamRequest(), metadata=metadata)),
            "Create": lambda: posts.Create(posts_pb2.PostCreateRequest(title="During the outage"), metadata=metadata),
            "Destroy": lambda: posts.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id)), metadata=metadata),
            "Login": lambda: auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD)),
            "Signup": lambda: users.Create(users_pb2.UserCreateRequest(email="new@example.com", password=PASSWORD)),
            "Users.List": lambda: users.List(users_pb2.UserListRequest(), metadata=metadata),
        }
        seen = {}
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as excinfo:
                call()
            seen[name] = (excinfo.value.code(), excinfo.value.details())
        assert all(health(channel, name) == NOT_SERVING for name in HEALTH_NAMES)

        outage.restore()
        wait_for_health(channel, SERVING)
        assert retrieve().title == post.title
        assert posts.Create(posts_pb2.PostCreateRequest(title="After"), metadata=metadata).title == "After"

        # Nothing written during the outage.
        titles = [row.title for row in posts.List(posts_pb2.PostListRequest(), metadata=metadata).posts]
        assert sorted(titles) == sorted(["After", post.title])

    output = server_output(process)
    assert seen == dict.fromkeys(calls, (UNAVAILABLE, "The database is unavailable; retry later.")), output
    assert "Traceback" not in output, output
    # One line per failed call (the access log's), and one for each change of the database's state.
    outage_lines = [line for line in output.splitlines() if "unavailable" in line.lower()]
    assert len(outage_lines) == len(calls) + 1, output
    assert sum("code=UNAVAILABLE" in line for line in outage_lines) == len(calls), output
    assert output.count("Database default is unavailable: ") == 1, output
    assert output.count("Database default is reachable again") == 1, output


@pytest.mark.server_env(TEST_DATABASE_PROBE_INTERVAL="300")
def test_a_call_that_hits_a_connection_error_turns_health_not_serving_at_once(outage, database_server, user, post):
    """Health follows the RPCs' own failures too, without waiting for a probe (one every 300 s here)."""
    address, process = database_server
    with grpc.insecure_channel(address) as channel:
        posts = posts_pb2_grpc.PostControllerStub(channel)
        outage.cut()
        assert_status(
            lambda: posts.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=auth_metadata(user)),
            UNAVAILABLE,
        )
        wait_for_health(channel, NOT_SERVING)


@pytest.mark.server_env(CONN_MAX_AGE="0", DB_CONNECT_TIMEOUT="2")
def test_a_database_that_stops_answering_is_not_serving_and_unavailable_after_the_timeouts(
    outage, database_server, user, post
):
    if outage.hang is None:
        pytest.skip("a local SQLite file cannot stop answering the way a network does")
    address, process = database_server
    with grpc.insecure_channel(address) as channel:
        posts = posts_pb2_grpc.PostControllerStub(channel)
        outage.hang()
        wait_for_health(channel, NOT_SERVING)  # the probe's connection never completes
        # A new connection gives up after DB_CONNECT_TIMEOUT instead of holding the call for minutes.
        assert_status(
            lambda: posts.Retrieve(
                posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=auth_metadata(user), timeout=20
            ),
            UNAVAILABLE,
        )
        outage.restore()
        wait_for_health(channel, SERVING)


def test_calls_whose_queries_the_network_swallows_end_at_their_deadline_and_the_server_keeps_answering(
    outage, database_server, user, post
):
    """The query is sent, then nothing comes back (nor does the cancel request): the loop never waits on it."""
    if outage.silence is None:
        pytest.skip("a local SQLite file cannot stop answering the way a network does")
    address, process = database_server
    with grpc.insecure_channel(address) as channel:
        posts = posts_pb2_grpc.PostControllerStub(channel)
        request = posts_pb2.PostRetrieveRequest(id=str(post.id))
        assert posts.Retrieve(request, metadata=auth_metadata(user), timeout=10).title == post.title
        outage.silence()
        for _ in range(3):
            started = time.monotonic()
            assert_status(
                lambda: posts.Retrieve(request, metadata=auth_metadata(user), timeout=1),
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            assert time.monotonic() - started < 3
        # Health is answered from the event loop: no cancel request to the silent database holds it.
        started = time.monotonic()
        statuses = [health(channel, name) for name in HEALTH_NAMES]
        assert time.monotonic() - started < 2, statuses
        assert set(statuses) <= {SERVING, NOT_SERVING}
        # The swallowed queries never return: end their connections, as a network that comes back resets them.
        outage.cut()
        outage.restore()
        wait_for_health(channel, SERVING)
        assert posts.Retrieve(request, metadata=auth_metadata(user), timeout=10).title == post.title
