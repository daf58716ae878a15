"""Who may call what: users and posts RPCs as anonymous, other, owner and staff callers."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from posts.models import Post
from protos import posts_pb2, users_pb2
from tests.support.factories import PASSWORD, make_post, make_user
from tests.support.helpers import assert_status, auth_metadata
from users.models import User


@pytest.fixture
def other(transactional_db):
    return make_user(is_verified=True)


@pytest.fixture
def staff(transactional_db):
    return make_user(is_staff=True)


def test_signup_needs_no_token(anon_users_stub):
    created = anon_users_stub.Create(users_pb2.UserCreateRequest(email="open@example.com", password=PASSWORD))
    assert User.objects.filter(pk=created.id, email="open@example.com").exists()


@pytest.mark.parametrize(
    "call",
    [
        lambda stub, user: stub.List(users_pb2.UserListRequest()),
        lambda stub, user: list(stub.Stream(users_pb2.UserStreamRequest())),
        lambda stub, user: stub.Retrieve(users_pb2.UserRetrieveRequest(id=str(user.id))),
        lambda stub, user: stub.Update(users_pb2.UserUpdateRequest(id=str(user.id), email="x@example.com")),
        lambda stub, user: stub.PartialUpdate(users_pb2.UserPartialUpdateRequest(id=str(user.id))),
        lambda stub, user: stub.Destroy(users_pb2.UserDestroyRequest(id=str(user.id))),
    ],
    ids=["List", "Stream", "Retrieve", "Update", "PartialUpdate", "Destroy"],
)
def test_every_other_user_rpc_needs_a_token(anon_users_stub, user, call):
    assert_status(lambda: call(anon_users_stub, user), grpc.StatusCode.UNAUTHENTICATED)
    assert User.objects.get(pk=user.pk).email == user.email


def test_any_user_may_read_another_user(anon_users_stub, user, other):
    fetched = anon_users_stub.Retrieve(users_pb2.UserRetrieveRequest(id=str(user.id)), metadata=auth_metadata(other))
    assert fetched.email == user.email


@pytest.fixture
def hidden(transactional_db) -> list[User]:
    """Accounts only staff may see: staff, a superuser without staff status, and a deactivated one."""
    superuser = make_user()
    inactive = make_user()
    User.objects.filter(pk=superuser.pk).update(is_superuser=True)
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    return [make_user(is_staff=True), User.objects.get(pk=superuser.pk), User.objects.get(pk=inactive.pk)]


def listed_ids(stub, caller: User, **filters) -> set[str]:
    """Return the ids ``caller`` gets from List (with ``filters``); without filters, check Stream sends the same."""
    metadata = auth_metadata(caller)
    page = stub.List(users_pb2.UserListRequest(page_size=1000, **filters), metadata=metadata)
    listed = {row.id for row in page.users}
    if not filters:
        stream = stub.Stream(users_pb2.UserStreamRequest(), metadata=metadata)
        assert {row.id for batch in stream for row in batch.users} == listed
    return listed


def test_a_user_who_is_not_staff_cannot_find_staff_superusers_or_inactive_accounts(
    anon_users_stub, user, other, hidden
):
    assert listed_ids(anon_users_stub, other) == {str(user.id), str(other.id)}
    for account in hidden:
        assert_status(
            lambda account=account: anon_users_stub.Retrieve(
                users_pb2.UserRetrieveRequest(id=str(account.id)), metadata=auth_metadata(other)
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        assert listed_ids(anon_users_stub, other, email=account.email) == set()
        assert_status(
            lambda account=account: anon_users_stub.Destroy(
                users_pb2.UserDestroyRequest(id=str(account.id)), metadata=auth_metadata(other)
            ),
            grpc.StatusCode.NOT_FOUND,
        )
    assert User.objects.count() == 5


def test_staff_see_every_account_and_its_flags(anon_users_stub, user, hidden):
    staff = hidden[0]
    assert listed_ids(anon_users_stub, staff) == {str(user.id), *(str(account.id) for account in hidden)}
    superuser = anon_users_stub.Retrieve(
        users_pb2.UserRetrieveRequest(id=str(hidden[1].id)), metadata=auth_metadata(staff)
    )
    assert superuser.is_superuser and not superuser.is_staff
    assert not anon_users_stub.Retrieve(
        users_pb2.UserRetrieveRequest(id=str(hidden[2].id)), metadata=auth_metadata(staff)
    ).is_active


def test_a_user_may_not_change_or_delete_another_user(anon_users_stub, user, other):
    metadata = auth_metadata(other)
    mask = field_mask_pb2.FieldMask(paths=["email"])
    for call in (
        lambda: anon_users_stub.Update(
            users_pb2.UserUpdateRequest(id=str(user.id), email="hijack@example.com", password=PASSWORD),
            metadata=metadata,
        ),
        lambda: anon_users_stub.PartialUpdate(
            users_pb2.UserPartialUpdateRequest(id=str(user.id), email="hijack@example.com", update_mask=mask),
            metadata=metadata,
        ),
        lambda: anon_users_stub.Destroy(users_pb2.UserDestroyRequest(id=str(user.id)), metadata=metadata),
    ):
        assert_status(call, grpc.StatusCode.PERMISSION_DENIED, details_contain="your own account")
    assert User.objects.get(pk=user.pk).email == user.email


def test_staff_may_change_and_delete_any_user(anon_users_stub, user, staff):
    metadata = auth_metadata(staff)
    anon_users_stub.PartialUpdate(
        users_pb2.UserPartialUpdateRequest(
            id=str(user.id), email="moderated@example.com", update_mask=field_mask_pb2.FieldMask(paths=["email"])
        ),
        metadata=metadata,
    )
    assert User.objects.get(pk=user.pk).email == "moderated@example.com"
    anon_users_stub.Destroy(users_pb2.UserDestroyRequest(id=str(user.id)), metadata=metadata)
    assert not User.objects.filter(pk=user.pk).exists()


@pytest.mark.parametrize(
    "call",
    [
        lambda stub, post: stub.List(posts_pb2.PostListRequest()),
        lambda stub, post: list(stub.Stream(posts_pb2.PostStreamRequest())),
        lambda stub, post: stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))),
        lambda stub, post: stub.Create(posts_pb2.PostCreateRequest(title="Anonymous")),
        lambda stub, post: stub.Update(posts_pb2.PostUpdateRequest(id=str(post.id), title="Anonymous")),
        lambda stub, post: stub.PartialUpdate(posts_pb2.PostPartialUpdateRequest(id=str(post.id), title="Anonymous")),
        lambda stub, post: stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id))),
    ],
    ids=["List", "Stream", "Retrieve", "Create", "Update", "PartialUpdate", "Destroy"],
)
def test_every_post_rpc_needs_a_token(anon_posts_stub, post, call):
    assert_status(lambda: call(anon_posts_stub, post), grpc.StatusCode.UNAUTHENTICATED)
    assert list(Post.objects.values_list("id", "title")) == [(post.id, post.title)]


def test_any_user_may_read_any_post(anon_posts_stub, post, other):
    metadata = auth_metadata(other)
    assert (
        anon_posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=metadata).title == post.title
    )
    assert [message.id for message in anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata).posts] == [
        str(post.id)
    ]


def test_create_makes_the_caller_the_owner(anon_posts_stub, other):
    created = anon_posts_stub.Create(posts_pb2.PostCreateRequest(title="Mine"), metadata=auth_metadata(other))
    assert created.owner == str(other.id)
    assert Post.objects.get(pk=created.id).owner_id == other.id


def test_only_the_owner_or_staff_may_change_or_delete_a_post(anon_posts_stub, post, other, staff):
    metadata = auth_metadata(other)
    for call in (
        lambda: anon_posts_stub.Update(
            posts_pb2.PostUpdateRequest(id=str(post.id), title="Mine now"), metadata=metadata
        ),
        lambda: anon_posts_stub.PartialUpdate(
            posts_pb2.PostPartialUpdateRequest(
                id=str(post.id), title="Mine now", update_mask=field_mask_pb2.FieldMask(paths=["title"])
            ),
            metadata=metadata,
        ),
        lambda: anon_posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id)), metadata=metadata),
    ):
        assert_status(call, grpc.StatusCode.PERMISSION_DENIED, details_contain="owner or staff")
    assert Post.objects.get(pk=post.pk).title == post.title

    staff_metadata = auth_metadata(staff)
    anon_posts_stub.Update(posts_pb2.PostUpdateRequest(id=str(post.id), title="Moderated"), metadata=staff_metadata)
    row = Post.objects.get(pk=post.pk)
    assert (row.title, row.owner_id) == ("Moderated", post.owner_id)
    anon_posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id)), metadata=staff_metadata)
    assert not Post.objects.filter(pk=post.pk).exists()


def test_the_owner_may_change_and_delete_their_post(posts_stub, post):
    posts_stub.PartialUpdate(
        posts_pb2.PostPartialUpdateRequest(
            id=str(post.id), description="Edited", update_mask=field_mask_pb2.FieldMask(paths=["description"])
        )
    )
    assert Post.objects.get(pk=post.pk).description == "Edited"
    posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id)))
    assert not Post.objects.exists()


def test_permission_is_checked_before_the_request_is_validated(anon_posts_stub, post, other):
    """Someone else's post gives PERMISSION_DENIED, not a hint about what would be valid."""
    assert_status(
        lambda: anon_posts_stub.Update(
            posts_pb2.PostUpdateRequest(id=str(post.id), title=""), metadata=auth_metadata(other)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


def test_a_missing_post_is_not_found_for_everyone(anon_posts_stub, other):
    missing = make_post()
    missing_id = str(missing.id)
    missing.delete()
    assert_status(
        lambda: anon_posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=missing_id), metadata=auth_metadata(other)),
        grpc.StatusCode.NOT_FOUND,
    )
