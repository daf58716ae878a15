"""The project's fixtures: users, posts, stubs on the live server of ``grpc_ext.testing``, server processes.

The plugin serves every service on a free port over the test database
(``grpc_server``, ``grpc_address``, ``grpc_channel``) and makes clients signed
in as a user (``grpc_client``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from django.core.cache import cache
from django.test import override_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import auth_pb2_grpc, posts_pb2_grpc, users_pb2_grpc
from tests.support.factories import make_post, make_user

pytest_plugins = ["grpc_ext.testing"]

BASE_DIR = Path(__file__).resolve().parent.parent


#: Fixtures that serve gRPC (the others that do depend on one of them), and what a test module calls to serve
#: gRPC itself or starts a server process with.
SERVER_FIXTURES = {"grpc_server", "run_server", "production_servers", "database_server"}
SERVER_BUILDERS = ("build_server", "serve_in_background", "start_live_server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``transport`` every test that serves gRPC: CI runs them on each transport (``GRPC_TRANSPORT``)."""
    for item in items:
        module = getattr(item, "module", None)
        serves = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if serves or any(hasattr(module, name) for name in SERVER_BUILDERS):
            item.add_marker(pytest.mark.transport)


@pytest.fixture(scope="session", autouse=True)
def fast_password_hasher():
    """Hash test passwords with a cheap hasher: the default costs about 0.5 s per user."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, which can be dropped at the end even when the run goes through PgBouncer.

    PgBouncer keeps its server connections to the test database open after
    the last test, and PostgreSQL refuses to drop a database others are
    connected to; so they are ended first, from the maintenance database.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
        connection.close()
        with connection._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Start every test with empty rate-limit counters (they live in the cache)."""
    cache.clear()
    yield
    cache.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def run_server():
    """Start ``manage.py grpcrunserver`` with the test interceptors; kill it if a test leaves it running.

    ``start(*args, env=...)`` returns the process and its address once Health answers.
    """
    processes = []

    def start(*args: str, env: dict | None = None, open_files: int | None = None) -> tuple[subprocess.Popen, str]:
        address = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.server_settings",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        command = [sys.executable, "manage.py", "grpcrunserver", address, *args]
        if open_files:
            command = [sys.executable, "-c", LIMIT_OPEN_FILES_AND_EXEC, str(open_files), *command]
        process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        with grpc.insecure_channel(address) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=20)
        return process, address

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


#: ``python -c`` this, SOFT, COMMAND...: lower the soft limit of open files, as many systems start
#: processes, then become COMMAND (same pid). Not a ``preexec_fn``: that runs Python in a child forked
#: from a process with grpc threads, which can deadlock.
LIMIT_OPEN_FILES_AND_EXEC = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@pytest.fixture(scope="session")
def served_database(tmp_path_factory) -> SimpleNamespace:
    """A migrated SQLite file for server subprocesses: ``.path``, and ``.env`` that points them at it."""
    path = tmp_path_factory.mktemp("served") / "db.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.support.server_settings",
        "DATABASE_URL": f"sqlite:///{path}",
        "CACHE_LOCATION": str(path.parent / "cache"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, env=env, check=True, capture_output=True
    )
    return SimpleNamespace(path=path, env={key: env[key] for key in ("DATABASE_URL", "CACHE_LOCATION")})


@pytest.fixture
def user(transactional_db):
    """A verified user: the one the ``*_stub`` fixtures call as."""
    return make_user(is_verified=True)


@pytest.fixture
def post(user):
    return make_post(owner=user)


@pytest.fixture
def users_stub(grpc_channel, user):
    """UserController, every call carrying ``user``'s access token."""
    from grpc_ext.testing import with_metadata

    return users_pb2_grpc.UserControllerStub(with_metadata(grpc_channel, user))


@pytest.fixture
def posts_stub(grpc_channel, user):
    """PostController, every call carrying ``user``'s access token."""
    from grpc_ext.testing import with_metadata

    return posts_pb2_grpc.PostControllerStub(with_metadata(grpc_channel, user))


@pytest.fixture
def anon_users_stub(grpc_channel, transactional_db):
    """UserController with no token; pass ``metadata=auth_metadata(...)`` to call as someone."""
    return users_pb2_grpc.UserControllerStub(grpc_channel)


@pytest.fixture
def anon_posts_stub(grpc_channel, transactional_db):
    """PostController with no token; pass ``metadata=auth_metadata(...)`` to call as someone."""
    return posts_pb2_grpc.PostControllerStub(grpc_channel)


@pytest.fixture
def auth_stub(grpc_channel, transactional_db):
    return auth_pb2_grpc.AuthControllerStub(grpc_channel)
