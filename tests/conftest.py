"""A real gRPC server on a free port, and stubs connected to it through a real channel."""

from __future__ import annotations

import grpc
import pytest

from grpc_ext.server import build_server
from protos import posts_pb2_grpc, users_pb2_grpc
from tests.factories import make_post, make_user


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Close the server threads' connections after each RPC.

    Otherwise they stay open past the session and PostgreSQL refuses to drop
    the test database.
    """
    from django.db import connections

    connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session")
def grpc_address(django_db_setup, django_db_blocker):
    """Serve every service on 127.0.0.1:<free port> for the whole session."""
    with django_db_blocker.unblock():
        server = build_server("127.0.0.1:0", max_workers=4, reflection_enabled=True)
        server.start()
        yield f"127.0.0.1:{server.port}"
        server.stop(None).wait()


@pytest.fixture(scope="session")
def grpc_channel(grpc_address):
    with grpc.insecure_channel(grpc_address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


@pytest.fixture
def users_stub(grpc_channel, transactional_db):
    return users_pb2_grpc.UserControllerStub(grpc_channel)


@pytest.fixture
def posts_stub(grpc_channel, transactional_db):
    return posts_pb2_grpc.PostControllerStub(grpc_channel)


@pytest.fixture
def user(transactional_db):
    return make_user()


@pytest.fixture
def post(user):
    return make_post(owner=user)
