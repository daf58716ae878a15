"""The error contract: every status a client can get, with its rich details, through a real channel."""

from __future__ import annotations

import logging
import socket
import time
import uuid

import grpc
import pytest
from django.db import connection, transaction
from django.db.models.signals import post_save
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from grpc_ext.exceptions import (
    InvalidArgument,
    excerpt,
    is_contention,
    is_database_unavailable,
    to_grpc_error,
    to_status_proto,
)
from grpc_ext.signals import grpc_request_started
from grpc_ext.wire.serializers import ModelProtoSerializer
from posts.models import Post
from protos import auth_pb2, posts_pb2, users_pb2
from tests.support.factories import PASSWORD, make_post, make_user
from tests.support.helpers import assert_status, auth_metadata, bad_request_fields, database_error, unreachable_database
from users.models import User


def test_validation_error_is_invalid_argument_with_one_violation_per_field_error(posts_stub):
    error = assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="title: This field may not be blank.",
    )
    status = rpc_status.from_call(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == error.details()
    assert bad_request_fields(error) == ["title"]


def test_every_invalid_field_gets_its_own_violation(anon_users_stub):
    error = assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="not-an-email", password="")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert sorted(bad_request_fields(error)) == ["email", "password"]


def test_violations_describe_the_problem(posts_stub):
    error = assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="x" * 101)), grpc.StatusCode.INVALID_ARGUMENT
    )
    bad_request = error_details_pb2.BadRequest()
    rpc_status.from_call(error).details[0].Unpack(bad_request)
    [violation] = bad_request.field_violations
    assert violation.field == "title"
    assert "no more than 100 characters" in violation.description


def test_domain_validation_errors_carry_field_violations_too(anon_users_stub):
    """The password validators run in users.services, not in the serializer."""
    error = assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="short@example.com", password="abc")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="password: ",
    )
    assert set(bad_request_fields(error)) == {"password"}
    assert len(bad_request_fields(error)) >= 2  # too short, and too common


def test_email_already_registered_is_already_exists_with_the_field(anon_users_stub, user):
    error = assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email=user.email, password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
        details_contain="email",
    )
    assert bad_request_fields(error) == ["email"]


def test_changing_email_to_a_taken_one_is_already_exists(users_stub, user):
    other = make_user()
    assert_status(
        lambda: users_stub.PartialUpdate(
            users_pb2.UserPartialUpdateRequest(
                id=str(user.id), email=other.email, update_mask=field_mask_pb2.FieldMask(paths=["email"])
            )
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert User.objects.get(pk=user.pk).email == user.email


def test_missing_object_is_not_found(posts_stub):
    missing = str(uuid.uuid4())
    assert_status(
        lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=missing)),
        grpc.StatusCode.NOT_FOUND,
        details_contain=missing,
    )


def test_id_that_is_not_a_uuid_is_invalid_argument_on_the_id_field(posts_stub):
    error = assert_status(
        lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id="42")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert bad_request_fields(error) == ["id"]


def test_unknown_mask_path_is_invalid_argument_on_update_mask(posts_stub, post):
    error = assert_status(
        lambda: posts_stub.PartialUpdate(
            posts_pb2.PostPartialUpdateRequest(id=str(post.id), update_mask=field_mask_pb2.FieldMask(paths=["nope"]))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="nope",
    )
    assert bad_request_fields(error) == ["update_mask"]


def test_no_credentials_is_unauthenticated(anon_posts_stub):
    assert_status(
        lambda: anon_posts_stub.List(posts_pb2.PostListRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="not provided",
    )


def test_acting_on_someone_elses_post_is_permission_denied(anon_posts_stub, post):
    assert_status(
        lambda: anon_posts_stub.Destroy(
            posts_pb2.PostDestroyRequest(id=str(post.id)), metadata=auth_metadata(make_user())
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        details_contain="owner",
    )
    assert Post.objects.filter(pk=post.pk).exists()


def test_rate_limit_is_resource_exhausted_with_retry_info(auth_stub, user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "1/minute"}}
    auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD))
    error = assert_status(
        lambda: auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        details_contain="throttled",
    )
    retry_info = error_details_pb2.RetryInfo()
    [detail] = rpc_status.from_call(error).details
    assert detail.Unpack(retry_info)
    assert 0 < retry_info.retry_delay.seconds <= 60


def test_unexpected_error_is_internal_with_a_generic_message_and_a_logged_traceback(
    posts_stub, post, monkeypatch, caplog
):
    def broken_selector():
        raise RuntimeError("secret internals: /srv/app/db.py line 42")

    monkeypatch.setattr("posts.servicers.post_list", broken_selector)
    with caplog.at_level(logging.ERROR, logger="grpc_ext"):
        error = assert_status(
            lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))), grpc.StatusCode.INTERNAL
        )
    assert error.details() == "Internal server error."
    assert "secret" not in str(rpc_status.from_call(error))
    assert "Traceback" in caplog.text and "secret internals" in caplog.text


def test_unexpected_error_in_a_stream_is_internal_too(posts_stub, monkeypatch):
    def broken_selector():
        raise RuntimeError("boom")

    monkeypatch.setattr("posts.servicers.post_list", broken_selector)
    assert_status(lambda: list(posts_stub.Stream(posts_pb2.PostStreamRequest())), grpc.StatusCode.INTERNAL)


@pytest.mark.parametrize("own_transaction", [False, True], ids=["the-handlers", "its-own"])
def test_failed_create_writes_nothing_even_after_a_partial_save(posts_stub, user, monkeypatch, own_transaction):
    """A failure after the row was saved rolls the whole write back: a domain function runs in the
    handler's transaction unless it says it is atomic by itself (``non_atomic_requests``), as one
    that owns its transaction does."""
    import posts.serializers

    def create_then_fail(**fields):
        make_post(**fields)
        raise RuntimeError("failure after the insert")

    if own_transaction:
        create_then_fail = transaction.non_atomic_requests(transaction.atomic(create_then_fail))
    monkeypatch.setattr(posts.serializers.PostProtoSerializer.Meta, "create_function", create_then_fail)
    assert_status(lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="Half")), grpc.StatusCode.INTERNAL)
    assert not Post.objects.exists()


def test_a_failed_create_without_a_domain_service_writes_nothing_even_after_its_insert(posts_stub, user, monkeypatch):
    """ModelSerializer's own create (a row, then its many-to-many) runs in the handler's transaction."""
    import posts.serializers

    def fail_after_insert(sender, **kwargs):
        raise RuntimeError("failure after the insert")

    monkeypatch.setattr(posts.serializers.PostProtoSerializer.Meta, "create_function", None)
    post_save.connect(fail_after_insert, sender=Post)
    try:
        assert_status(lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="Half")), grpc.StatusCode.INTERNAL)
    finally:
        post_save.disconnect(fail_after_insert, sender=Post)
    assert not Post.objects.exists()


def test_a_failed_create_of_an_overridden_serializer_create_writes_nothing(posts_stub, user, monkeypatch):
    """A serializer's ``create`` that does more than call the domain service is wrapped in a transaction."""
    import posts.serializers

    def create_then_fail(self, validated_data):
        ModelProtoSerializer.create(self, validated_data)
        raise RuntimeError("failure after the domain service")

    monkeypatch.setattr(posts.serializers.PostProtoSerializer, "create", create_then_fail)
    assert_status(lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="Half")), grpc.StatusCode.INTERNAL)
    assert not Post.objects.exists()


def test_failed_destroy_deletes_nothing(posts_stub, post, monkeypatch):
    def delete_then_fail(self, *args, **kwargs):
        Post.objects.filter(pk=self.pk).delete()
        raise RuntimeError("failure after the delete")

    monkeypatch.setattr(Post, "delete", delete_then_fail)
    assert_status(lambda: posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id))), grpc.StatusCode.INTERNAL)
    assert Post.objects.filter(pk=post.pk).exists()


# Which database errors are an outage (UNAVAILABLE), raised by the real driver of the test database.


def test_a_database_that_cannot_be_reached_is_unavailable(transactional_db, tmp_path):
    error = database_error(unreachable_database(tmp_path))
    assert is_database_unavailable(error) and not is_contention(error)
    assert to_grpc_error(error).status_code == grpc.StatusCode.UNAVAILABLE
    [retry_info] = to_status_proto(to_grpc_error(error)).details
    assert retry_info.Is(error_details_pb2.RetryInfo.DESCRIPTOR)


@pytest.mark.parametrize(
    "sql",
    ["SELEC 1", "SELECT * FROM no_such_table", "INSERT INTO users_user (id) VALUES (NULL)"],
    ids=["syntax error", "missing table", "constraint"],
)
def test_errors_of_a_working_database_are_not_unavailable(transactional_db, sql):
    error = database_error({}, sql)
    assert not is_database_unavailable(error), error


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a statement timeout is a PostgreSQL setting")
def test_a_statement_timeout_is_unavailable(transactional_db):
    # SET LOCAL: the timeout ends with the statement's transaction, as it must behind PgBouncer in transaction
    # mode, which also refuses the "options" startup parameter that would set it for the connection.
    error = database_error({}, "SET LOCAL statement_timeout = 10; SELECT pg_sleep(1)")
    assert is_database_unavailable(error)
    assert is_contention(error)  # the database works: health stays SERVING


def test_a_backing_service_that_refuses_connections_is_unavailable():
    """A cache server that is down (redis-py's ConnectionError matches by name, as Python's own does)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()
    with pytest.raises(ConnectionRefusedError) as excinfo:
        socket.create_connection(address, timeout=5)
    assert to_grpc_error(excinfo.value).status_code == grpc.StatusCode.UNAVAILABLE
    assert to_grpc_error(RuntimeError("a bug")) is None


def test_error_messages_quote_a_bounded_excerpt():
    assert excerpt("short") == "'short'"
    assert excerpt("x" * 10_000) == f"{'x' * 40!r}... (10,000 characters)"
    status = to_status_proto(
        InvalidArgument("y" * 10_000, field_errors={f"field_{index}": ["z" * 1000] for index in range(1000)})
    )
    assert len(status.SerializeToString()) < 4096


def test_a_database_error_in_the_request_started_signal_is_unavailable_too(grpc_channel, posts_stub, tmp_path):
    """The signal's receivers (close_old_connections) touch the connection before the handler runs."""
    error = database_error(unreachable_database(tmp_path))

    def broken_receiver(**kwargs):
        raise error

    grpc_request_started.connect(broken_receiver)
    try:
        assert_status(lambda: posts_stub.List(posts_pb2.PostListRequest()), grpc.StatusCode.UNAVAILABLE)
    finally:
        grpc_request_started.disconnect(broken_receiver)
    # The failure marked the server NOT_SERVING; its next probe, finding the database fine, undoes that.
    health = health_pb2_grpc.HealthStub(grpc_channel)
    deadline = time.monotonic() + 10
    while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "health stayed NOT_SERVING"
        time.sleep(0.05)
