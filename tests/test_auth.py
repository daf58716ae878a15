"""auth.AuthController and JWT authentication of every other RPC, through a real channel."""

from __future__ import annotations

from datetime import timedelta

import grpc
import jwt
import pytest
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from posts.models import Post
from protos import auth_pb2, posts_pb2, users_pb2
from tests.support.factories import PASSWORD, make_user
from tests.support.helpers import assert_status, auth_metadata, bad_request_fields
from users.models import User

NO_ACCOUNT = "No active account found with the given credentials"


def login(auth_stub, email: str, password: str = PASSWORD) -> auth_pb2.TokenPair:
    return auth_stub.Login(auth_pb2.LoginRequest(email=email, password=password))


def test_login_gives_tokens_that_authenticate_later_calls(auth_stub, anon_users_stub, user):
    tokens = login(auth_stub, user.email)
    assert tokens.access and tokens.refresh
    me = anon_users_stub.Retrieve(users_pb2.UserRetrieveRequest(id=str(user.id)), metadata=auth_metadata(tokens.access))
    assert me.email == user.email
    assert User.objects.get(pk=user.pk).last_login is not None


@pytest.mark.parametrize(
    "email, password",
    [("known", "wrong-password-1"), ("nobody@example.com", PASSWORD), ("inactive", PASSWORD)],
    ids=["wrong password", "unknown email", "inactive user"],
)
def test_failed_login_does_not_reveal_whether_the_email_exists(auth_stub, user, email, password):
    inactive = make_user(is_active=False)
    email = {"known": user.email, "inactive": inactive.email}.get(email, email)
    error = assert_status(lambda: login(auth_stub, email, password), grpc.StatusCode.UNAUTHENTICATED)
    assert error.details() == NO_ACCOUNT


def test_login_with_blank_fields_is_invalid_argument(auth_stub, transactional_db):
    error = assert_status(lambda: login(auth_stub, "", ""), grpc.StatusCode.INVALID_ARGUMENT)
    assert sorted(bad_request_fields(error)) == ["email", "password"]


def test_refresh_rotates_and_the_old_refresh_token_works_once(auth_stub, anon_posts_stub, user):
    first = login(auth_stub, user.email)
    second = auth_stub.Refresh(auth_pb2.RefreshRequest(refresh=first.refresh))
    assert second.access and second.refresh and second.refresh != first.refresh
    anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=auth_metadata(second.access))
    assert_status(
        lambda: auth_stub.Refresh(auth_pb2.RefreshRequest(refresh=first.refresh)),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="blacklisted",
    )


def test_logout_blacklists_the_refresh_token(auth_stub, user):
    tokens = login(auth_stub, user.email)
    auth_stub.Logout(auth_pb2.LogoutRequest(refresh=tokens.refresh))
    assert_status(
        lambda: auth_stub.Refresh(auth_pb2.RefreshRequest(refresh=tokens.refresh)),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="blacklisted",
    )


def test_refresh_for_a_deactivated_user_is_unauthenticated(auth_stub, user):
    tokens = login(auth_stub, user.email)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert_status(
        lambda: auth_stub.Refresh(auth_pb2.RefreshRequest(refresh=tokens.refresh)), grpc.StatusCode.UNAUTHENTICATED
    )


def test_refresh_for_a_deleted_user_is_unauthenticated(auth_stub, user):
    tokens = login(auth_stub, user.email)
    User.objects.filter(pk=user.pk).delete()
    assert_status(
        lambda: auth_stub.Refresh(auth_pb2.RefreshRequest(refresh=tokens.refresh)), grpc.StatusCode.UNAUTHENTICATED
    )


def expired_access_token(user: User) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=-1))
    return str(token)


def forged_access_token(user: User) -> str:
    payload = dict(AccessToken.for_user(user).payload)
    return jwt.encode(payload, "a-key-that-is-not-the-server-signing-key", algorithm="HS256")


@pytest.mark.parametrize(
    "make_header, reason",
    [
        (lambda user: f"Bearer {expired_access_token(user)}", "Token is expired"),
        (lambda user: f"Bearer {forged_access_token(user)}", "Token is invalid"),
        (lambda user: f"Bearer {RefreshToken.for_user(user)}", "Token has wrong type"),
        (lambda user: "Bearer not.a.jwt", "Token is invalid"),
        (lambda user: "Bearer two parts", "two space-delimited values"),
        (lambda user: f"Basic {AccessToken.for_user(user)}", "not provided"),
        (lambda user: "", "not provided"),
    ],
    ids=["expired", "forged", "refresh as access", "garbage", "three parts", "other scheme", "empty"],
)
def test_bad_credentials_are_unauthenticated_with_the_reason(anon_posts_stub, user, make_header, reason):
    assert_status(
        lambda: anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=(("authorization", make_header(user)),)),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain=reason,
    )


def test_token_of_a_deactivated_user_is_unauthenticated(anon_posts_stub, user):
    metadata = auth_metadata(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert_status(
        lambda: anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="inactive",
    )


def test_a_user_deactivated_or_deleted_after_a_call_is_refused_at_once(anon_posts_stub, user):
    """The user read by the first call is cached; saving or deleting it drops it from the cache."""
    metadata = auth_metadata(user)
    other = make_user()
    other_metadata = auth_metadata(other)
    anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata)
    anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=other_metadata)

    user.is_active = False
    user.save()
    other.delete()

    assert_status(
        lambda: anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="inactive",
    )
    assert_status(
        lambda: anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=other_metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="not found",
    )


def test_a_write_that_sends_no_signal_is_seen_after_the_cache_ttl(anon_posts_stub, user, settings):
    """``QuerySet.update`` bypasses the signals: the cached user stands until the TTL, none with TTL 0."""
    metadata = auth_metadata(user)
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "AUTH_CACHE_TTL": 300}
    anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata)
    User.objects.filter(pk=user.pk).update(is_active=False)

    anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata)  # still cached

    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "AUTH_CACHE_TTL": 0}
    assert_status(
        lambda: anon_posts_stub.List(posts_pb2.PostListRequest(), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        details_contain="inactive",
    )


def test_a_bad_token_is_refused_even_where_no_token_is_needed(anon_users_stub, transactional_db):
    """As in DRF: credentials that are sent are checked, so a client learns its token is bad."""
    assert_status(
        lambda: anon_users_stub.Create(
            users_pb2.UserCreateRequest(email="new@example.com", password=PASSWORD),
            metadata=(("authorization", "Bearer not.a.jwt"),),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert not User.objects.exists()


def test_login_ignores_the_case_of_the_email(auth_stub, user):
    assert login(auth_stub, user.email.upper()).access


def test_a_user_who_just_signed_up_can_log_in_read_and_post(auth_stub, anon_users_stub, anon_posts_stub, post):
    """``is_verified`` is recorded, not a gate: there is no verification flow to pass yet."""
    anon_users_stub.Create(users_pb2.UserCreateRequest(email="fresh@example.com", password=PASSWORD))
    metadata = auth_metadata(login(auth_stub, "fresh@example.com").access)
    retrieved = anon_posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=metadata)
    created = anon_posts_stub.Create(posts_pb2.PostCreateRequest(title="First words"), metadata=metadata)
    assert retrieved.id == str(post.id)
    assert Post.objects.get(pk=created.id).owner.email == "fresh@example.com"


def test_login_is_rate_limited_per_client(auth_stub, user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "3/minute"}}
    for _ in range(3):
        assert_status(lambda: login(auth_stub, user.email, "wrong-password-1"), grpc.StatusCode.UNAUTHENTICATED)
    assert_status(lambda: login(auth_stub, user.email), grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_behind_a_trusted_proxy_login_is_rate_limited_per_forwarded_client_address(auth_stub, user, settings):
    """An L7 balancer (HAProxy ``option forwardfor``) is every caller's peer: the address it forwards counts."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "2/minute"}}
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "NUM_PROXIES": 1}

    def login_from(address: str):
        request = auth_pb2.LoginRequest(email=user.email, password=PASSWORD)
        return auth_stub.Login(request, metadata=(("x-forwarded-for", f"203.0.113.9, {address}"),))

    for _ in range(2):
        login_from("198.51.100.1")
    assert_status(lambda: login_from("198.51.100.1"), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert login_from("198.51.100.2").access  # another client behind the same balancer


def test_without_a_trusted_proxy_a_forwarded_address_is_ignored(auth_stub, user, settings):
    """``NUM_PROXIES`` 0 (the default): a client cannot pick a fresh address for each call to escape the limit,
    even when REST trusts its proxies (``REST_FRAMEWORK["NUM_PROXIES"]``, another setting: another route)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "2/minute"},
        "NUM_PROXIES": 1,
    }
    request = auth_pb2.LoginRequest(email=user.email, password=PASSWORD)
    for number in range(2):
        auth_stub.Login(request, metadata=(("x-forwarded-for", f"198.51.100.{number}"),))
    assert_status(
        lambda: auth_stub.Login(request, metadata=(("x-forwarded-for", "198.51.100.99"),)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


def test_signup_is_rate_limited_per_client(anon_users_stub, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"signup": "2/hour"}}
    for number in range(2):
        anon_users_stub.Create(users_pb2.UserCreateRequest(email=f"new{number}@example.com", password=PASSWORD))
    assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="third@example.com", password=PASSWORD)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert User.objects.count() == 2
