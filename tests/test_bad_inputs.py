"""A table of bad inputs: each gets its status code, and no row anywhere changes."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta

import grpc
import jwt
import pytest
from django.core.cache import cache
from google.protobuf import field_mask_pb2
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from posts.models import Post
from protos import auth_pb2, auth_pb2_grpc, posts_pb2, posts_pb2_grpc, users_pb2, users_pb2_grpc
from tests.support.factories import PASSWORD, make_post, make_user
from tests.support.helpers import assert_status, auth_metadata, bad_request_fields
from users.models import User

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
#: An error message quotes at most an excerpt of any input.
MAX_DETAILS_LENGTH = 1024


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
    channel: grpc.Channel

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
        channel=grpc_channel,
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


def signed(user: User, token_class=AccessToken, **claims) -> str:
    """Return a token signed with the server's key, its claims replaced by ``claims`` (None removes one)."""
    token = token_class()  # for_user would record a refresh token in the database
    token["user_id"] = str(user.pk)
    for name, value in claims.items():
        if value is None:
            del token[name]
        else:
            token[name] = value
    return str(token)


def partial_post(w: World, *paths: str, **fields):
    return w.posts.PartialUpdate(
        P.PostPartialUpdateRequest(id=w.pid, update_mask=mask(*paths), **fields), metadata=w.as_owner
    )


def partial_user(w: World, *paths: str, **fields):
    return w.users.PartialUpdate(
        U.UserPartialUpdateRequest(id=str(w.owner.id), update_mask=mask(*paths), **fields), metadata=w.as_owner
    )


def stream_users(w: World, batch_size: int):
    return list(w.users.Stream(U.UserStreamRequest(batch_size=batch_size), metadata=w.as_owner))


def stream_posts(w: World, batch_size: int):
    return list(w.posts.Stream(P.PostStreamRequest(batch_size=batch_size), metadata=w.as_owner))


#: 10 KB: echoed whole in a message and its BadRequest, more than the 8 KB of trailers peers accept.
HUGE = "x" * 10_000
#: 60 KB: more than SQLite's longest LIKE pattern (50,000 bytes).
ENORMOUS = "y" * 60_000
THOUSAND_PATHS = [f"field_{index}" for index in range(1000)]

# What an outside fuzzer sends: oversized, malformed and hostile values in every field of every RPC.
HOSTILE_CASES = [
    # Keys.
    *(
        pytest.param(call, INVALID, id=name)
        for name, call in {
            "post retrieve 10 KB id": lambda w: w.posts.Retrieve(P.PostRetrieveRequest(id=HUGE), metadata=w.as_owner),
            "post update 10 KB id": lambda w: w.posts.Update(
                P.PostUpdateRequest(id=HUGE, title="x"), metadata=w.as_owner
            ),
            "post partial 10 KB id": lambda w: w.posts.PartialUpdate(
                P.PostPartialUpdateRequest(id=HUGE, title="x", update_mask=mask("title")), metadata=w.as_owner
            ),
            "post destroy 10 KB id": lambda w: w.posts.Destroy(P.PostDestroyRequest(id=HUGE), metadata=w.as_owner),
            "user retrieve 10 KB id": lambda w: w.users.Retrieve(U.UserRetrieveRequest(id=HUGE), metadata=w.as_owner),
            "user destroy 10 KB id": lambda w: w.users.Destroy(U.UserDestroyRequest(id=HUGE), metadata=w.as_owner),
            "post id with a NUL": lambda w: w.posts.Retrieve(
                P.PostRetrieveRequest(id=w.pid[:-1] + "\x00"), metadata=w.as_owner
            ),
            "user id of odd unicode": lambda w: w.users.Retrieve(
                U.UserRetrieveRequest(id="\u202e\ufeff\U0001f600"), metadata=w.as_owner
            ),
        }.items()
    ),
    # List: filters, ordering, paging.
    *(
        pytest.param(call, INVALID, id=name)
        for name, call in {
            "posts owner 10 KB": lambda w: w.posts.List(P.PostListRequest(owner=HUGE), metadata=w.as_owner),
            "posts owner with a NUL": lambda w: w.posts.List(P.PostListRequest(owner="me\x00"), metadata=w.as_owner),
            "posts title_contains 60 KB": lambda w: w.posts.List(
                P.PostListRequest(title_contains=ENORMOUS), metadata=w.as_owner
            ),
            "users email 60 KB": lambda w: w.users.List(U.UserListRequest(email=ENORMOUS), metadata=w.as_owner),
            "users email with a NUL": lambda w: w.users.List(
                U.UserListRequest(email="a@example.com\x00"), metadata=w.as_owner
            ),
            "posts order_by 10 KB": lambda w: w.posts.List(P.PostListRequest(order_by=HUGE), metadata=w.as_owner),
            "users order_by 10 KB": lambda w: w.users.List(U.UserListRequest(order_by=HUGE), metadata=w.as_owner),
            "posts order_by 10 KB direction": lambda w: w.posts.List(
                P.PostListRequest(order_by="title " + HUGE), metadata=w.as_owner
            ),
            "posts order_by of 1,000 terms": lambda w: w.posts.List(
                P.PostListRequest(order_by=", ".join(THOUSAND_PATHS)), metadata=w.as_owner
            ),
            "posts order_by one field 5,000 times": lambda w: w.posts.List(
                P.PostListRequest(order_by=",".join(["title"] * 5000)), metadata=w.as_owner
            ),
            "posts order_by with a NUL": lambda w: w.posts.List(
                P.PostListRequest(order_by="title\x00"), metadata=w.as_owner
            ),
            "posts page_token 10 KB": lambda w: w.posts.List(P.PostListRequest(page_token=HUGE), metadata=w.as_owner),
            "posts page_token with a NUL": lambda w: w.posts.List(
                P.PostListRequest(page_token="\x00:\x00"), metadata=w.as_owner
            ),
            "users page_token odd unicode": lambda w: w.users.List(
                U.UserListRequest(page_token="\u0000\u202e\U0001f600:x:y"), metadata=w.as_owner
            ),
            "posts most negative page_size": lambda w: w.posts.List(
                P.PostListRequest(page_size=-(2**31)), metadata=w.as_owner
            ),
            "users negative page_size": lambda w: w.users.List(U.UserListRequest(page_size=-1), metadata=w.as_owner),
            "posts negative batch_size": lambda w: stream_posts(w, -1),
            "posts most negative batch_size": lambda w: stream_posts(w, -(2**31)),
            "users negative batch_size": lambda w: stream_users(w, -5),
            "posts order_by upper-case direction": lambda w: w.posts.List(
                P.PostListRequest(order_by="title DESC"), metadata=w.as_owner
            ),
            "posts order_by direction twice": lambda w: w.posts.List(
                P.PostListRequest(order_by="title desc desc"), metadata=w.as_owner
            ),
            "users page_token used on posts": lambda w: w.posts.List(
                P.PostListRequest(
                    page_size=1,
                    page_token=w.users.List(U.UserListRequest(page_size=1), metadata=w.as_owner).next_page_token,
                ),
                metadata=w.as_owner,
            ),
            "users email of odd unicode": lambda w: w.users.List(
                U.UserListRequest(email="\u202e" * 300), metadata=w.as_owner
            ),
        }.items()
    ),
    # Field masks.
    *(
        pytest.param(call, INVALID, id=name)
        for name, call in {
            "mask path Title": lambda w: partial_post(w, "Title", title="x"),
            "mask path title_": lambda w: partial_post(w, "title_", title="x"),
            "mask path owner__is_staff": lambda w: partial_post(w, "owner__is_staff"),
            "mask path owner.is_staff": lambda w: partial_post(w, "owner.is_staff"),
            "mask path empty": lambda w: partial_post(w, ""),
            "mask path * with another": lambda w: partial_post(w, "*", "title", title="x"),
            "mask path 10 KB": lambda w: partial_post(w, HUGE),
            "mask path with a NUL": lambda w: partial_post(w, "title\x00", title="x"),
            "mask of 1,000 paths": lambda w: partial_post(w, *THOUSAND_PATHS),
            "mask of 1,000 upper-case paths": lambda w: partial_post(w, *(p.upper() for p in THOUSAND_PATHS)),
            "user mask path Email": lambda w: partial_user(w, "Email", email="new@example.com"),
            "user mask path is_staff_": lambda w: partial_user(w, "is_staff_"),
            "user mask of 1,000 paths": lambda w: partial_user(w, *THOUSAND_PATHS),
        }.items()
    ),
    # Written fields.
    *(
        pytest.param(call, INVALID, id=name)
        for name, call in {
            "create title with a NUL": lambda w: create_post(w, w.as_owner, title="a\x00b"),
            "create 10 KB title": lambda w: create_post(w, w.as_owner, title=HUGE),
            "create 101 emoji title": lambda w: create_post(w, w.as_owner, title="\U0001f600" * 101),
            "create description with a NUL": lambda w: w.posts.Create(
                P.PostCreateRequest(title="ok", description="\x00"), metadata=w.as_owner
            ),
            "create 60 KB description": lambda w: w.posts.Create(
                P.PostCreateRequest(title="ok", description=ENORMOUS), metadata=w.as_owner
            ),
            "update title with a NUL": lambda w: w.posts.Update(
                P.PostUpdateRequest(id=w.pid, title="\x00"), metadata=w.as_owner
            ),
            "partial description with a NUL": lambda w: partial_post(w, "description", description="a\x00"),
            "signup email with a NUL": lambda w: signup(w, "nul\x00@example.com"),
            "signup 10 KB email": lambda w: signup(w, HUGE + "@example.com"),
            "signup password with a NUL": lambda w: signup(w, "nulpass@example.com", "correct-horse\x00battery"),
            "signup email of odd unicode": lambda w: signup(w, "\u202e\ufeff@example.com"),
            "user update email with a NUL": lambda w: w.users.Update(
                U.UserUpdateRequest(id=str(w.owner.id), email="a\x00@example.com"), metadata=w.as_owner
            ),
            "user partial 10 KB email": lambda w: partial_user(w, "email", email=HUGE),
            "signup 10 KB password": lambda w: signup(w, "longpass@example.com", HUGE),
            "user update 10 KB password": lambda w: w.users.Update(
                U.UserUpdateRequest(id=str(w.owner.id), email=w.owner.email, password=HUGE), metadata=w.as_owner
            ),
            "user partial password with a NUL": lambda w: partial_user(w, "password", password="long-enough\x00pw"),
            "user partial password masked but unset": lambda w: partial_user(w, "password"),
            "user update with only an id": lambda w: w.users.Update(
                U.UserUpdateRequest(id=str(w.owner.id)), metadata=w.as_owner
            ),
            "post update with only an id": lambda w: w.posts.Update(P.PostUpdateRequest(id=w.pid), metadata=w.as_owner),
        }.items()
    ),
    # Sessions and tokens.
    *(
        pytest.param(call, code, id=name)
        for name, code, call in [
            (
                "login email with a NUL",
                INVALID,
                lambda w: w.auth.Login(A.LoginRequest(email="a\x00", password="x")),
            ),
            ("login 10 KB email", UNAUTHENTICATED, lambda w: w.auth.Login(A.LoginRequest(email=HUGE, password="x"))),
            (
                "login password with a NUL",
                INVALID,
                lambda w: w.auth.Login(A.LoginRequest(email=w.owner.email, password="\x00")),
            ),
            (
                "login 10 KB password",
                UNAUTHENTICATED,
                lambda w: w.auth.Login(A.LoginRequest(email=w.owner.email, password=HUGE)),
            ),
            ("refresh 10 KB", UNAUTHENTICATED, lambda w: w.auth.Refresh(A.RefreshRequest(refresh=HUGE))),
            ("refresh with a NUL", INVALID, lambda w: w.auth.Refresh(A.RefreshRequest(refresh="a.b\x00.c"))),
            ("logout 10 KB", UNAUTHENTICATED, lambda w: w.auth.Logout(A.LogoutRequest(refresh=HUGE))),
            ("logout with a NUL", INVALID, lambda w: w.auth.Logout(A.LogoutRequest(refresh="\x00"))),
            (
                "signed token, user id not a UUID",
                UNAUTHENTICATED,
                lambda w: create_post(w, auth_metadata(signed(w.owner, user_id="not-a-uuid"))),
            ),
            (
                "signed token, user id 42",
                UNAUTHENTICATED,
                lambda w: create_post(w, auth_metadata(signed(w.owner, user_id=42))),
            ),
            (
                "signed token, user id a list",
                UNAUTHENTICATED,
                lambda w: create_post(w, auth_metadata(signed(w.owner, user_id=[1]))),
            ),
            (
                "signed token, user id 4 KB",
                UNAUTHENTICATED,
                lambda w: create_post(w, auth_metadata(signed(w.owner, user_id="u" * 4000))),
            ),
            (
                "signed token, no such user",
                UNAUTHENTICATED,
                lambda w: create_post(w, auth_metadata(signed(w.owner, user_id=MISSING))),
            ),
            (
                "signed token, no user id",
                UNAUTHENTICATED,
                lambda w: create_post(w, auth_metadata(signed(w.owner, user_id=None))),
            ),
            (
                "signed token, user id with a NUL",
                UNAUTHENTICATED,
                lambda w: w.users.List(
                    U.UserListRequest(), metadata=auth_metadata(signed(w.owner, user_id=str(w.owner.id) + "\x00"))
                ),
            ),
            (
                "signed refresh, user id not a UUID",
                UNAUTHENTICATED,
                lambda w: w.auth.Refresh(A.RefreshRequest(refresh=signed(w.owner, RefreshToken, user_id="nope"))),
            ),
            (
                "signed refresh, no such user",
                UNAUTHENTICATED,
                lambda w: w.auth.Refresh(A.RefreshRequest(refresh=signed(w.owner, RefreshToken, user_id=MISSING))),
            ),
            (
                "signed refresh, user id 42",
                UNAUTHENTICATED,
                lambda w: w.auth.Refresh(A.RefreshRequest(refresh=signed(w.owner, RefreshToken, user_id=42))),
            ),
            (
                "logout signed refresh, user id not a UUID",
                UNAUTHENTICATED,
                lambda w: w.auth.Logout(A.LogoutRequest(refresh=signed(w.owner, RefreshToken, user_id="nope"))),
            ),
            (
                "logout signed refresh, no such user",
                UNAUTHENTICATED,
                lambda w: w.auth.Logout(A.LogoutRequest(refresh=signed(w.owner, RefreshToken, user_id=MISSING))),
            ),
            ("5 KB bearer token", UNAUTHENTICATED, lambda w: create_post(w, auth_metadata("a" * 5000))),
            (
                "bearer token with spaces",
                UNAUTHENTICATED,
                lambda w: create_post(w, (("authorization", "Bearer a b c"),)),
            ),
            ("bearer without a token", UNAUTHENTICATED, lambda w: create_post(w, (("authorization", "Bearer"),))),
            ("basic credentials", UNAUTHENTICATED, lambda w: create_post(w, (("authorization", "Basic YTpi"),))),
        ]
    ),
]


@pytest.mark.parametrize("call, code", CASES + HOSTILE_CASES)
def test_bad_input_gets_its_status_and_changes_no_row(world, call, code):
    before = snapshot()
    error = assert_status(lambda: call(world), code)
    assert len(error.details()) <= MAX_DETAILS_LENGTH, "the message quotes too much of the input"
    assert snapshot() == before


def test_hostile_values_that_are_valid_succeed(world):
    """Odd but valid values are stored and returned as sent; a huge page_size is capped, not refused."""
    title = "\u202e\ufeff\U0001f600 \u00e9\u0301"
    created = create_post(world, world.as_owner, title=title)
    assert world.posts.Retrieve(P.PostRetrieveRequest(id=created.id), metadata=world.as_owner).title == title
    assert (
        world.posts.List(P.PostListRequest(title_contains="\U0001f600"), metadata=world.as_owner).posts[0].id
        == created.id
    )
    page = world.posts.List(P.PostListRequest(page_size=2**31 - 1), metadata=world.as_owner)
    assert len(page.posts) == Post.objects.count()
    assert stream_posts(world, 2**31 - 1)[0].posts


def test_the_table_covers_every_status_and_at_least_thirty_inputs():
    codes = {case.values[1] for case in CASES}
    assert codes == {INVALID, NOT_FOUND, EXISTS, UNAUTHENTICATED, DENIED}
    assert len(CASES) >= 30


# A fuzzer's sweep: every field of every RPC of the three services, one hostile value at a time.

STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n\t\r",
    "\u202e\ufeff\u200b",
    "\U0001f600" * 40,
    "e\u0301" * 60,
    "' OR 1=1 --",
    "%_\\[]*",
    "../../etc/passwd",
    "-1",
    "9" * 400,
    "null",
    "*",
    "me",
    "urn:uuid:" + MISSING,
    MISSING.upper(),
    "x" * 10_000,
]
INTEGERS = [-1, -(2**31), 2**31 - 1]
MASKS = [["*", "*"], [""], ["a.b.c"], ["Title", "title_", "owner__is_staff"], THOUSAND_PATHS, ["x" * 5000]]
SERVICES = {
    "users": (users_pb2.DESCRIPTOR.services_by_name["UserController"], users_pb2_grpc.UserControllerStub),
    "posts": (posts_pb2.DESCRIPTOR.services_by_name["PostController"], posts_pb2_grpc.PostControllerStub),
    "auth": (auth_pb2.DESCRIPTOR.services_by_name["AuthController"], auth_pb2_grpc.AuthControllerStub),
}
FUZZED = [
    (service, method.name, field.name)
    for service, (descriptor, _) in SERVICES.items()
    for method in descriptor.methods
    for field in method.input_type.fields
]


def fuzz_values(field) -> list:
    if field.message_type is not None:
        return [field_mask_pb2.FieldMask(paths=paths) for paths in MASKS] if field.name == "update_mask" else []
    if field.type == field.TYPE_STRING:
        return STRINGS
    return INTEGERS


@pytest.mark.parametrize("service, method, field_name", FUZZED, ids=[".".join(case) for case in FUZZED])
def test_no_hostile_value_in_any_field_ends_internal_or_changes_a_row_when_refused(world, service, method, field_name):
    descriptor, stub_class = SERVICES[service]
    method_descriptor = descriptor.methods_by_name[method]
    request_class = getattr(sys.modules[f"protos.{service}_pb2"], method_descriptor.input_type.name)
    call = getattr(stub_class(world.channel), method)
    field = method_descriptor.input_type.fields_by_name[field_name]
    for value in fuzz_values(field):
        cache.clear()  # rate limits would answer before validation
        before = snapshot()
        request = request_class(**{field_name: value})
        try:
            response = call(request, metadata=world.as_owner, timeout=30)
            if method_descriptor.server_streaming:
                list(response)
        except grpc.RpcError as error:
            assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (value, error.details())
            assert len(error.details()) <= MAX_DETAILS_LENGTH, value
            assert snapshot() == before, value


# The wire contract: bytes that do not decode, on every method of every service the server registers.

#: Bytes no message decodes: a tag whose varint never ends, a field whose length runs past the end,
#: a field of wire type 7 (there is none), a group that is never closed.
UNDECODABLE = {
    "garbage": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    "truncated": b"\x0a\x7fonly a few bytes",
    "wrong wire type": b"\x0f\x01",
    "unclosed group": b"\x0b\x08\x01",
}


def registered_methods(channel: grpc.Channel) -> list:
    """Return the descriptor of every method of every service the server lists through reflection."""
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    names = ProtoReflectionDescriptorDatabase(channel).get_services()
    pool = descriptor_pool.Default()
    return [method for name in names for method in pool.FindServiceByName(name).methods]


def raw_call(channel: grpc.Channel, method, payload: bytes, metadata=()) -> grpc.RpcError | None:
    """Send ``payload`` as the one request of ``method`` (any kind) and return the error it ends with, if any."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            list(channel.unary_stream(path)(payload, metadata=metadata, timeout=10))
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error
    return None


def test_every_service_is_swept(world):
    """The sweep below reaches ours, authentication, health (Check, Watch, List) and reflection v1 and v1alpha."""
    paths = {f"{method.containing_service.full_name}/{method.name}" for method in registered_methods(world.channel)}
    assert {
        "posts.PostController/Create",
        "users.UserController/Create",
        "auth.AuthController/Login",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.health.v1.Health/List",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    } <= paths


@pytest.mark.parametrize("payload", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_undecodable_request_is_invalid_argument_naming_its_type_on_every_method(world, payload):
    """No method ends UNKNOWN or INTERNAL, nor shows an exception class, for bytes that do not decode."""
    before = snapshot()
    for method in registered_methods(world.channel):
        cache.clear()  # rate limits would answer first
        for metadata in ((), world.as_owner):
            error = raw_call(world.channel, method, payload, metadata)
            assert error is not None, method.full_name
            expected = f"The request is not a valid {method.input_type.full_name}."
            assert (error.code(), error.details()) == (INVALID, expected), method.full_name
    assert snapshot() == before


@pytest.mark.parametrize(
    "path, payload, type_name",
    [
        # title (field 2) of a PostCreateRequest, and email (field 1) of a UserCreateRequest, as invalid UTF-8.
        ("/posts.PostController/Create", b"\x12\x02\xff\xfe", "posts.PostCreateRequest"),
        ("/users.UserController/Create", b"\x0a\x03a\xc3(", "users.UserCreateRequest"),
        ("/auth.AuthController/Login", b"\x0a\x01\x80", "auth.LoginRequest"),
    ],
)
def test_string_field_with_invalid_utf8_is_invalid_argument(world, path, payload, type_name):
    before = snapshot()
    with pytest.raises(grpc.RpcError) as excinfo:
        world.channel.unary_unary(path)(payload, metadata=world.as_owner, timeout=10)
    assert excinfo.value.code() == INVALID
    assert excinfo.value.details() == f"The request is not a valid {type_name}."
    assert snapshot() == before


def test_undecodable_message_in_a_reflection_stream_is_invalid_argument(world):
    """Reflection reads a request stream: a valid request is answered, then the bad one ends the call."""
    from grpc_reflection.v1alpha import reflection_pb2

    for service in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
        call = world.channel.stream_stream(f"/{service}.ServerReflection/ServerReflectionInfo")
        good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
        responses = call(iter([good, UNDECODABLE["truncated"]]), timeout=10)
        first = reflection_pb2.ServerReflectionResponse.FromString(next(responses))
        assert first.list_services_response.service
        with pytest.raises(grpc.RpcError) as excinfo:
            next(responses)
        assert excinfo.value.code() == INVALID
        assert excinfo.value.details() == f"The request is not a valid {service}.ServerReflectionRequest."


def test_bytes_of_another_request_type_get_every_violated_field(world):
    """A PostCreateRequest's bytes sent to UserController/Create decode, and the BadRequest names every bad field."""
    before = snapshot()
    payload = P.PostCreateRequest(title="a title", description="not a uuid").SerializeToString()
    with pytest.raises(grpc.RpcError) as excinfo:
        world.channel.unary_unary("/users.UserController/Create")(payload, timeout=10)
    assert excinfo.value.code() == INVALID
    assert set(bad_request_fields(excinfo.value)) >= {"request_id", "email"}
    assert snapshot() == before
