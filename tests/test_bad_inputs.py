"""A table of bad inputs: each gets its status code, and no row anywhere changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import grpc
import jwt
import pytest
from google.protobuf import field_mask_pb2
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from posts.models import Post
from protos import auth_pb2, auth_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc
from tests.factories import PASSWORD, make_post, make_user
from tests.helpers import assert_status, auth_metadata
from users.models import User

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class World:
    """Two users with a post each, an unverified and an inactive user, and stubs without a token."""

    users: users_pb2_grpc.UserControllerStub
    posts: posts_pb2_grpc.PostControllerStub
    auth: auth_pb2_grpc.AuthControllerStub
    owner: User
    other: User
    unverified: User
    inactive_token: str
    post: Post
    others_post: Post
    refresh: str

    @property
    def as_owner(self):
        return auth_metadata(self.owner)

    @property
    def pid(self) -> str:
        return str(self.post.id)


@pytest.fixture
def world(grpc_channel, transactional_db) -> World:
    owner, other = make_user(is_verified=True), make_user(is_verified=True)
    inactive = make_user()
    inactive_token = str(AccessToken.for_user(inactive))
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    return World(
        users=users_pb2_grpc.UserControllerStub(grpc_channel),
        posts=posts_pb2_grpc.PostControllerStub(grpc_channel),
        auth=auth_pb2_grpc.AuthControllerStub(grpc_channel),
        owner=owner,
        other=other,
        unverified=make_user(),
        inactive_token=inactive_token,
        post=make_post(owner=owner, title="Original", description="Untouched"),
        others_post=make_post(owner=other),
        refresh=str(RefreshToken.for_user(owner)),
    )


def snapshot() -> dict[str, list[dict]]:
    """Every row of every table a bad input could touch."""
    models = [User, Post, OutstandingToken, BlacklistedToken]
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in models}


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


def expired(user: User) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=-1))
    return str(token)


def forged(user: User) -> str:
    return jwt.encode(dict(AccessToken.for_user(user).payload), "a-key-that-is-not-the-server-signing-key", "HS256")


def create_post(w: World, metadata, title: str = "Fine"):
    return w.posts.Create(posts_pb2.PostCreateRequest(title=title), metadata=metadata)


def signup(w: World, email: str, password: str = PASSWORD):
    return w.users.Create(users_pb2.UserCreateRequest(email=email, password=password))


P = posts_pb2
U = users_pb2
A = auth_pb2
MISSING = str(uuid.uuid4())

CASES = [
    # Malformed and missing ids.
    pytest.param(
        lambda w: w.posts.Retrieve(P.PostRetrieveRequest(id=""), metadata=w.as_owner), INVALID, id="post id empty"
    ),
    pytest.param(
        lambda w: w.posts.Retrieve(P.PostRetrieveRequest(id="42"), metadata=w.as_owner), INVALID, id="post id 42"
    ),
    pytest.param(
        lambda w: w.posts.Retrieve(P.PostRetrieveRequest(id="not-a-uuid"), metadata=w.as_owner),
        INVALID,
        id="post id word",
    ),
    pytest.param(
        lambda w: w.posts.Retrieve(P.PostRetrieveRequest(id=w.pid + "0"), metadata=w.as_owner),
        INVALID,
        id="post id too long",
    ),
    pytest.param(
        lambda w: w.posts.Update(P.PostUpdateRequest(id="'; DROP TABLE", title="x"), metadata=w.as_owner),
        INVALID,
        id="update id injection",
    ),
    pytest.param(
        lambda w: w.posts.Destroy(P.PostDestroyRequest(id="0" * 33), metadata=w.as_owner),
        INVALID,
        id="destroy id 33 zeros",
    ),
    pytest.param(
        lambda w: w.users.Retrieve(U.UserRetrieveRequest(id="me"), metadata=w.as_owner), INVALID, id="user id word"
    ),
    pytest.param(
        lambda w: w.posts.Retrieve(P.PostRetrieveRequest(id=MISSING), metadata=w.as_owner), NOT_FOUND, id="post missing"
    ),
    pytest.param(
        lambda w: w.posts.Update(P.PostUpdateRequest(id=MISSING, title="x"), metadata=w.as_owner),
        NOT_FOUND,
        id="update missing post",
    ),
    pytest.param(
        lambda w: w.posts.Destroy(P.PostDestroyRequest(id=MISSING), metadata=w.as_owner),
        NOT_FOUND,
        id="destroy missing post",
    ),
    pytest.param(
        lambda w: w.users.Destroy(U.UserDestroyRequest(id=MISSING), metadata=w.as_owner),
        NOT_FOUND,
        id="destroy missing user",
    ),
    # Post fields.
    pytest.param(lambda w: create_post(w, w.as_owner, title=""), INVALID, id="create empty title"),
    pytest.param(lambda w: create_post(w, w.as_owner, title="   "), INVALID, id="create blank title"),
    pytest.param(lambda w: create_post(w, w.as_owner, title="x" * 101), INVALID, id="create 101-char title"),
    pytest.param(
        lambda w: w.posts.Update(P.PostUpdateRequest(id=w.pid, title=""), metadata=w.as_owner),
        INVALID,
        id="update empty title",
    ),
    pytest.param(
        lambda w: w.posts.Update(
            P.PostUpdateRequest(id=w.pid, title="x" * 101, description="new"), metadata=w.as_owner
        ),
        INVALID,
        id="update 101-char title",
    ),
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(id=w.pid, title="", update_mask=mask("title")), metadata=w.as_owner
        ),
        INVALID,
        id="partial empty title",
    ),
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(
                id=w.pid, title="x" * 101, description="y", update_mask=mask("title", "description")
            ),
            metadata=w.as_owner,
        ),
        INVALID,
        id="partial 101-char title with a valid path",
    ),
    # Field masks.
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(id=w.pid, update_mask=mask("nope")), metadata=w.as_owner
        ),
        INVALID,
        id="mask unknown path",
    ),
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(id=w.pid, title="ok", update_mask=mask("title", "owner")), metadata=w.as_owner
        ),
        INVALID,
        id="mask read-only owner",
    ),
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(id=w.pid, update_mask=mask("created")), metadata=w.as_owner
        ),
        INVALID,
        id="mask read-only created",
    ),
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(id=w.pid, update_mask=mask("id")), metadata=w.as_owner
        ),
        INVALID,
        id="mask id",
    ),
    pytest.param(
        lambda w: w.users.PartialUpdate(
            U.UserPartialUpdateRequest(id=str(w.owner.id), update_mask=mask("is_staff")), metadata=w.as_owner
        ),
        INVALID,
        id="mask is_staff",
    ),
    # Paging.
    pytest.param(
        lambda w: w.posts.List(P.PostListRequest(page_size=-1), metadata=w.as_owner), INVALID, id="negative page_size"
    ),
    pytest.param(
        lambda w: w.posts.List(P.PostListRequest(page_token="garbage"), metadata=w.as_owner),
        INVALID,
        id="forged page_token",
    ),
    # Signup.
    pytest.param(lambda w: signup(w, "not-an-email"), INVALID, id="signup bad email"),
    pytest.param(lambda w: signup(w, "two@@example.com"), INVALID, id="signup double at"),
    pytest.param(lambda w: signup(w, ""), INVALID, id="signup empty email"),
    pytest.param(lambda w: signup(w, "a" * 250 + "@example.com"), INVALID, id="signup email too long"),
    pytest.param(lambda w: signup(w, w.owner.email), EXISTS, id="signup duplicate email"),
    pytest.param(lambda w: signup(w, "short@example.com", "abc12"), INVALID, id="signup short password"),
    pytest.param(lambda w: signup(w, "numeric@example.com", "8472619305"), INVALID, id="signup numeric password"),
    pytest.param(lambda w: signup(w, "common@example.com", "password"), INVALID, id="signup common password"),
    pytest.param(lambda w: signup(w, "empty@example.com", ""), INVALID, id="signup empty password"),
    pytest.param(
        lambda w: w.users.PartialUpdate(
            U.UserPartialUpdateRequest(id=str(w.owner.id), email=w.other.email, update_mask=mask("email")),
            metadata=w.as_owner,
        ),
        EXISTS,
        id="change email to a taken one",
    ),
    pytest.param(
        lambda w: w.users.PartialUpdate(
            U.UserPartialUpdateRequest(id=str(w.owner.id), password="123", update_mask=mask("password")),
            metadata=w.as_owner,
        ),
        INVALID,
        id="change to a short password",
    ),
    # Credentials.
    pytest.param(lambda w: w.posts.List(P.PostListRequest()), UNAUTHENTICATED, id="no token"),
    pytest.param(lambda w: create_post(w, auth_metadata(forged(w.owner))), UNAUTHENTICATED, id="forged token"),
    pytest.param(lambda w: create_post(w, auth_metadata(expired(w.owner))), UNAUTHENTICATED, id="expired token"),
    pytest.param(lambda w: create_post(w, auth_metadata(w.refresh)), UNAUTHENTICATED, id="refresh token as access"),
    pytest.param(lambda w: create_post(w, auth_metadata("abc.def.ghi")), UNAUTHENTICATED, id="garbage token"),
    pytest.param(
        lambda w: create_post(w, auth_metadata(w.inactive_token)), UNAUTHENTICATED, id="inactive user's token"
    ),
    pytest.param(
        lambda w: w.auth.Login(A.LoginRequest(email=w.owner.email, password="wrong-password-1")),
        UNAUTHENTICATED,
        id="login wrong password",
    ),
    pytest.param(
        lambda w: w.auth.Login(A.LoginRequest(email="ghost@example.com", password=PASSWORD)),
        UNAUTHENTICATED,
        id="login unknown email",
    ),
    pytest.param(lambda w: w.auth.Login(A.LoginRequest(password=PASSWORD)), INVALID, id="login empty email"),
    pytest.param(
        lambda w: w.auth.Refresh(A.RefreshRequest(refresh=str(AccessToken.for_user(w.owner)))),
        UNAUTHENTICATED,
        id="refresh with an access token",
    ),
    pytest.param(
        lambda w: w.auth.Refresh(A.RefreshRequest(refresh="abc.def.ghi")), UNAUTHENTICATED, id="refresh garbage"
    ),
    pytest.param(lambda w: w.auth.Refresh(A.RefreshRequest()), INVALID, id="refresh empty"),
    pytest.param(lambda w: w.auth.Logout(A.LogoutRequest(refresh="abc.def.ghi")), UNAUTHENTICATED, id="logout garbage"),
    # Someone else's things.
    pytest.param(
        lambda w: w.posts.Update(P.PostUpdateRequest(id=str(w.others_post.id), title="Mine"), metadata=w.as_owner),
        DENIED,
        id="update another's post",
    ),
    pytest.param(
        lambda w: w.posts.PartialUpdate(
            P.PostPartialUpdateRequest(id=str(w.others_post.id), title="Mine", update_mask=mask("title")),
            metadata=w.as_owner,
        ),
        DENIED,
        id="partial update another's post",
    ),
    pytest.param(
        lambda w: w.posts.Destroy(P.PostDestroyRequest(id=str(w.others_post.id)), metadata=w.as_owner),
        DENIED,
        id="destroy another's post",
    ),
    pytest.param(
        lambda w: w.users.Update(
            U.UserUpdateRequest(id=str(w.other.id), email="x@example.com", password=PASSWORD), metadata=w.as_owner
        ),
        DENIED,
        id="update another user",
    ),
    pytest.param(
        lambda w: w.users.Destroy(U.UserDestroyRequest(id=str(w.other.id)), metadata=w.as_owner),
        DENIED,
        id="destroy another user",
    ),
    pytest.param(
        lambda w: w.posts.List(P.PostListRequest(order_by="title, title desc"), metadata=w.as_owner),
        INVALID,
        id="order_by naming a field twice",
    ),
    pytest.param(
        lambda w: w.posts.List(P.PostListRequest(title_contains="a\x00"), metadata=w.as_owner),
        INVALID,
        id="null character in a filter",
    ),
    pytest.param(
        lambda w: w.users.Create(U.UserCreateRequest(email=w.owner.email.upper(), password=PASSWORD)),
        EXISTS,
        id="duplicate email in other case",
    ),
]


@pytest.mark.parametrize("call, code", CASES)
def test_bad_input_gets_its_status_and_changes_no_row(world, call, code):
    before = snapshot()
    assert_status(lambda: call(world), code)
    assert snapshot() == before


def test_the_table_covers_every_status_and_at_least_thirty_inputs():
    codes = {case.values[1] for case in CASES}
    assert codes == {INVALID, NOT_FOUND, EXISTS, UNAUTHENTICATED, DENIED}
    assert len(CASES) >= 30
