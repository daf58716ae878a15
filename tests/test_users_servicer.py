"""users.UserController through a real channel: every RPC, and the password never read back."""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import empty_pb2, field_mask_pb2

from protos import users_pb2
from tests.support.factories import PASSWORD, make_user
from tests.support.helpers import assert_status, bad_request_fields
from users.models import User


def test_user_message_has_no_password_field():
    assert "password" not in users_pb2.User.DESCRIPTOR.fields_by_name
    assert "password" in users_pb2.UserCreateRequest.DESCRIPTOR.fields_by_name


def test_create_then_retrieve_round_trips_every_field(anon_users_stub, users_stub):
    created = anon_users_stub.Create(users_pb2.UserCreateRequest(email="ada@example.com", password=PASSWORD))
    row = User.objects.get(pk=created.id)
    fetched = users_stub.Retrieve(users_pb2.UserRetrieveRequest(id=created.id))

    assert fetched == created
    assert (fetched.id, fetched.email) == (str(row.id), "ada@example.com")
    assert (fetched.is_active, fetched.is_verified, fetched.is_staff, fetched.is_superuser) == (
        True,
        False,
        False,
        False,
    )
    assert fetched.date_joined.ToDatetime(tzinfo=row.date_joined.tzinfo) == row.date_joined
    assert row.check_password(PASSWORD)
    assert row.password != PASSWORD


def test_password_never_appears_in_a_response_or_log_line(users_stub, caplog):
    with caplog.at_level(logging.DEBUG):
        created = users_stub.Create(users_pb2.UserCreateRequest(email="secret@example.com", password=PASSWORD))
        listed = users_stub.List(users_pb2.UserListRequest())
    row = User.objects.get(pk=created.id)
    for message in (created, *listed.users):
        wire = message.SerializeToString()
        assert PASSWORD.encode() not in wire and row.password.encode() not in wire
    assert PASSWORD not in caplog.text and row.password not in caplog.text


def test_duplicate_email_is_already_exists(users_stub, user):
    assert_status(
        lambda: users_stub.Create(users_pb2.UserCreateRequest(email=user.email, password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
        details_contain="email",
    )
    assert User.objects.count() == 1


def test_weak_password_is_invalid_and_creates_nobody(anon_users_stub):
    assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="weak@example.com", password="123")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="password",
    )
    assert not User.objects.exists()


def test_bad_email_is_invalid(anon_users_stub):
    assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="not-an-email", password=PASSWORD)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="email",
    )


def test_update_replaces_email_and_password(users_stub, user):
    users_stub.Update(
        users_pb2.UserUpdateRequest(id=str(user.id), email="renamed@example.com", password="another-pass-77")
    )
    row = User.objects.get(pk=user.pk)
    assert row.email == "renamed@example.com"
    assert row.check_password("another-pass-77")


def test_partial_update_changes_only_the_email(users_stub, user):
    users_stub.PartialUpdate(
        users_pb2.UserPartialUpdateRequest(
            id=str(user.id),
            email="only@example.com",
            password="would-change-9",
            update_mask=field_mask_pb2.FieldMask(paths=["email"]),
        )
    )
    row = User.objects.get(pk=user.pk)
    assert row.email == "only@example.com"
    assert row.check_password(PASSWORD)


def test_partial_update_cannot_touch_read_only_flags(users_stub, user):
    assert_status(
        lambda: users_stub.PartialUpdate(
            users_pb2.UserPartialUpdateRequest(
                id=str(user.id), update_mask=field_mask_pb2.FieldMask(paths=["is_staff"])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="is_staff",
    )
    assert not User.objects.get(pk=user.pk).is_staff


def test_destroy_deletes_the_account_and_its_token_stops_working(users_stub, user):
    assert users_stub.Destroy(users_pb2.UserDestroyRequest(id=str(user.id))) == empty_pb2.Empty()
    assert not User.objects.filter(pk=user.pk).exists()
    assert_status(
        lambda: users_stub.Retrieve(users_pb2.UserRetrieveRequest(id=str(user.id))),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="User not found",
    )


def test_retrieve_missing_id_is_not_found(users_stub):
    assert_status(
        lambda: users_stub.Retrieve(users_pb2.UserRetrieveRequest(id=str(uuid.uuid4()))), grpc.StatusCode.NOT_FOUND
    )


def test_list_pages_walk_every_user_exactly_once(users_stub, user):
    expected = {str(make_user().id) for _ in range(11)} | {str(user.id)}
    seen, token = [], ""
    while True:
        page = users_stub.List(users_pb2.UserListRequest(page_size=4, page_token=token))
        seen.extend(message.id for message in page.users)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 12 and set(seen) == expected


def test_stream_sends_every_user(users_stub, user):
    expected = {str(make_user().id) for _ in range(5)} | {str(user.id)}
    assert {
        user.id for response in users_stub.Stream(users_pb2.UserStreamRequest()) for user in response.users
    } == expected


def test_email_is_stored_lower_case_and_unique_whatever_its_case(anon_users_stub, user):
    created = anon_users_stub.Create(users_pb2.UserCreateRequest(email="Grace@Example.COM", password=PASSWORD))
    assert created.email == "grace@example.com"
    error = assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email=user.email.upper(), password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert bad_request_fields(error) == ["email"]
    assert User.objects.count() == 2


def test_a_signup_that_loses_a_race_for_its_email_is_already_exists(anon_users_stub, user, monkeypatch):
    """Both signups pass the uniqueness check; the database's constraint decides, with the same error."""
    monkeypatch.setattr(User, "validate_unique", lambda self, exclude=None: None)
    error = assert_status(  # upper case gets past the serializer's own (case-sensitive) check too
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email=user.email.upper(), password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
        details_contain="email",
    )
    assert bad_request_fields(error) == ["email"]
    assert User.objects.count() == 1


def test_update_without_a_password_keeps_the_password(users_stub, user):
    users_stub.Update(users_pb2.UserUpdateRequest(id=str(user.id), email="kept@example.com"))
    row = User.objects.get(pk=user.pk)
    assert row.email == "kept@example.com" and row.check_password(PASSWORD)


def test_create_without_a_password_is_invalid(anon_users_stub, transactional_db):
    error = assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="nopass@example.com")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="password: This field is required.",
    )
    assert bad_request_fields(error) == ["password"]
    assert not User.objects.exists()
