"""Queries per RPC on the hot paths, counted in the server thread that runs each RPC."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection

from grpc_ext.signals import grpc_request_finished, grpc_request_started
from posts.servicers import PostService
from protos import posts_pb2
from tests.support.factories import make_post


@pytest.fixture
def queries_per_rpc():
    """Return the list of SQL statements of each PostService RPC, one list per RPC, in order.

    The statements as the service sends them: the counting wrapper is the outermost, so it sees
    them before the call's statement timeout is prefixed to them (the same round trip).
    """
    rpcs: list[list[str]] = []
    local = threading.local()

    def count(execute, sql, params, many, context):
        rpcs[-1].append(sql)
        return execute(sql, params, many, context)

    def started(sender, **kwargs):
        if sender is PostService:
            rpcs.append([])
            local.wrapped = connection  # the server thread's own connection
            connection.execute_wrappers.insert(0, count)

    def finished(sender, **kwargs):
        if sender is PostService and getattr(local, "wrapped", None) is not None:
            local.wrapped.execute_wrappers.remove(count)
            local.wrapped = None

    grpc_request_started.connect(started)
    grpc_request_finished.connect(finished)
    yield rpcs
    grpc_request_started.disconnect(started)
    grpc_request_finished.disconnect(finished)


def test_retrieve_runs_one_query(posts_stub, post, queries_per_rpc):
    request = posts_pb2.PostRetrieveRequest(id=str(post.id))
    posts_stub.Retrieve(request)  # the caller's token and user are cached from here on
    posts_stub.Retrieve(request)
    assert len(queries_per_rpc[-1]) == 1, queries_per_rpc[-1]


def test_a_list_page_runs_one_query_however_many_rows(posts_stub, user, queries_per_rpc):
    for _ in range(25):
        make_post(owner=user)
    first = posts_stub.List(posts_pb2.PostListRequest(page_size=10))
    posts_stub.List(posts_pb2.PostListRequest(page_size=10, page_token=first.next_page_token))
    assert len(queries_per_rpc[-1]) == 1, queries_per_rpc[-1]


def test_create_runs_one_insert_and_nothing_else(posts_stub, post, queries_per_rpc):
    """No query for the owner (the caller, in hand) and no transaction around the domain service's one insert.

    A BEGIN is an execute() on SQLite (psycopg2 sends its own, and COMMIT is none), so SQLite pins it.
    """
    posts_stub.Create(posts_pb2.PostCreateRequest(title="warm-up"))  # the caller's token and user are cached
    posts_stub.Create(posts_pb2.PostCreateRequest(title="Counted"))
    statements = [sql.split()[0].upper() for sql in queries_per_rpc[-1]]
    assert statements == ["INSERT"], queries_per_rpc[-1]


def test_a_create_with_a_request_id_looks_its_record_up_once(posts_stub, post, queries_per_rpc):
    """The rate limits ask whether it is a retry, then the handler runs it: one lookup of the record serves both."""
    posts_stub.Create(posts_pb2.PostCreateRequest(title="warm-up"))  # the caller's token and user are cached
    request = posts_pb2.PostCreateRequest(title="Counted", request_id=str(uuid.uuid4()))
    posts_stub.Create(request)
    lookups = [sql for sql in queries_per_rpc[-1] if sql.startswith("SELECT") and "idempotencyrecord" in sql]
    assert len(lookups) == 1, queries_per_rpc[-1]
    posts_stub.Create(request)  # a retry: answered from the record, found by one lookup
    assert [sql.split()[0] for sql in queries_per_rpc[-1]] == ["SELECT"], queries_per_rpc[-1]
