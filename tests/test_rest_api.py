"""The REST perimeter: the same rules as gRPC, with DRF's JSON errors."""

from __future__ import annotations

import grpc
import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from posts import api as posts_api
from posts.models import Post
from protos import auth_pb2
from tests.support.factories import PASSWORD, make_post, make_user
from tests.support.helpers import access_token, assert_status, database_error, unreachable_database
from users.models import User

NO_ACCOUNT = "No active account found with the given credentials"


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def author(db) -> User:
    return make_user(is_verified=True)


def as_user(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
    return client


def test_signup_creates_a_user_without_echoing_the_password(client, db):
    response = client.post("/api/users/signup/", {"email": "ada@example.com", "password": PASSWORD}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["email"] == "ada@example.com" and response.data["is_verified"] is False
    assert "password" not in response.data
    assert User.objects.get(email="ada@example.com").check_password(PASSWORD)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "short@example.com", "password": "abc"}, "password"),
        ({"email": "", "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
    ],
    ids=["bad email", "short password", "empty email", "no email"],
)
def test_signup_errors_are_400_keyed_by_field(client, db, payload, field):
    response = client.post("/api/users/signup/", payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not User.objects.exists()


def test_signup_with_a_registered_email_is_400_on_email(client, author):
    response = client.post("/api/users/signup/", {"email": author.email, "password": PASSWORD}, format="json")
    assert response.status_code == 400
    assert "already exists" in str(response.data["email"])
    assert User.objects.count() == 1


def test_login_refresh_logout_cycle(client, author):
    tokens = client.post("/api/users/login/", {"email": author.email, "password": PASSWORD}, format="json").data
    assert set(tokens) == {"access", "refresh"}

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.get("/api/posts/").status_code == 200
    client.credentials()

    rotated = client.post("/api/users/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert rotated.status_code == 200 and rotated.data["refresh"] != tokens["refresh"]
    reused = client.post("/api/users/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert reused.status_code == 401

    assert client.post("/api/users/logout/", {"refresh": rotated.data["refresh"]}, format="json").status_code == 204
    after_logout = client.post("/api/users/token/refresh/", {"refresh": rotated.data["refresh"]}, format="json")
    assert after_logout.status_code == 401


@pytest.mark.parametrize("who", ["wrong password", "unknown email", "inactive"])
def test_failed_login_is_401_with_the_same_message_as_grpc(client, author, who):
    inactive = make_user(is_active=False)
    email, password = {
        "wrong password": (author.email, "wrong-password-1"),
        "unknown email": ("ghost@example.com", PASSWORD),
        "inactive": (inactive.email, PASSWORD),
    }[who]
    response = client.post("/api/users/login/", {"email": email, "password": password}, format="json")
    assert response.status_code == 401
    assert response.data["detail"] == NO_ACCOUNT


def test_posts_need_a_token(client, author):
    make_post(owner=author)
    assert client.get("/api/posts/").status_code == 401
    assert client.post("/api/posts/", {"title": "Anonymous"}, format="json").status_code == 401
    assert Post.objects.count() == 1


@pytest.mark.parametrize(
    "header",
    ["Bearer not.a.jwt", "Bearer two parts"],
    ids=["garbage", "three parts"],
)
def test_bad_tokens_are_401(client, db, header):
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get("/api/posts/").status_code == 401


@pytest.mark.parametrize("user_id", ["not-a-uuid", 42, "00000000-0000-4000-8000-000000000000"])
def test_a_well_signed_token_naming_no_user_is_401_as_over_grpc(client, author, user_id):
    token = AccessToken.for_user(author)
    token["user_id"] = user_id
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/posts/").status_code == 401


def test_create_sets_the_caller_as_owner_whatever_the_body_says(author):
    someone_else = make_user()
    response = as_user(author).post(
        "/api/posts/", {"title": "Hello", "description": "REST", "owner": str(someone_else.id)}, format="json"
    )
    assert response.status_code == 201, response.data
    row = Post.objects.get(pk=response.data["id"])
    assert row.owner_id == author.id and response.json()["owner"] == str(author.id)


def test_unverified_user_can_read_and_post(db):
    unverified = make_user()
    post = make_post(owner=make_user(is_verified=True))
    client = as_user(unverified)
    assert client.get(f"/api/posts/{post.id}/").status_code == 200
    response = client.post("/api/posts/", {"title": "First words"}, format="json")
    assert response.status_code == 201
    assert Post.objects.get(pk=response.data["id"]).owner_id == unverified.id


@pytest.mark.parametrize("title", ["", "x" * 101], ids=["empty", "101 characters"])
def test_bad_titles_are_400_on_title(author, title):
    response = as_user(author).post("/api/posts/", {"title": title}, format="json")
    assert response.status_code == 400 and "title" in response.data
    assert not Post.objects.exists()


def test_list_can_be_narrowed_to_the_callers_posts(author):
    mine = {str(make_post(owner=author).id) for _ in range(2)}
    make_post(owner=make_user())
    client = as_user(author)
    assert len(client.get("/api/posts/").data["results"]) == 3
    assert {row["id"] for row in client.get("/api/posts/?mine=true").data["results"]} == mine


def test_only_the_owner_or_staff_may_change_or_delete_a_post(author):
    post = make_post(owner=author, title="Original")
    other = as_user(make_user(is_verified=True))
    url = f"/api/posts/{post.id}/"
    assert other.get(url).status_code == 200
    assert other.put(url, {"title": "Mine"}, format="json").status_code == 403
    assert other.patch(url, {"title": "Mine"}, format="json").status_code == 403
    assert other.delete(url).status_code == 403
    assert Post.objects.get(pk=post.pk).title == "Original"

    owner = as_user(author)
    response = owner.patch(url, {"description": "Edited"}, format="json")
    assert response.status_code == 200 and response.data["title"] == "Original"
    assert owner.put(url, {"title": "Replaced"}, format="json").data["description"] == ""

    staff = as_user(make_user(is_staff=True))
    assert staff.delete(url).status_code == 204
    assert not Post.objects.filter(pk=post.pk).exists()


def test_patch_that_fails_validation_changes_nothing(author):
    post = make_post(owner=author, title="Original")
    response = as_user(author).patch(f"/api/posts/{post.id}/", {"title": "x" * 101}, format="json")
    assert response.status_code == 400 and "title" in response.data
    assert Post.objects.get(pk=post.pk).title == "Original"


def test_missing_and_malformed_post_ids_are_404(author):
    client = as_user(author)
    assert client.get("/api/posts/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert client.get("/api/posts/not-a-uuid/").status_code == 404


def test_signup_rate_limit_is_429(client, db, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"signup": "1/hour"}}
    assert (
        client.post("/api/users/signup/", {"email": "a@example.com", "password": PASSWORD}, format="json").status_code
        == 201
    )
    response = client.post("/api/users/signup/", {"email": "b@example.com", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert User.objects.count() == 1


def test_rest_and_grpc_logins_share_one_rate_limit_per_client(client, auth_stub, author, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "2/minute"}}
    for _ in range(2):
        response = client.post("/api/users/login/", {"email": author.email, "password": "nope-nope-1"}, format="json")
        assert response.status_code == 401
    assert (
        client.post("/api/users/login/", {"email": author.email, "password": PASSWORD}, format="json").status_code
        == 429
    )
    assert_status(
        lambda: auth_stub.Login(auth_pb2.LoginRequest(email=author.email, password=PASSWORD)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


def test_a_post_key_that_is_not_a_uuid_is_a_json_404(author):
    response = as_user(author).get("/api/posts/not-a-uuid/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_database_that_cannot_be_reached_is_503_with_retry_after(author, monkeypatch, tmp_path):
    error = database_error(unreachable_database(tmp_path))

    def unreachable(**kwargs):
        raise error

    monkeypatch.setattr(posts_api, "post_list", unreachable)
    response = as_user(author).get("/api/posts/")
    assert response.status_code == 503
    assert response.json() == {"detail": "The database is unavailable; retry later."}
    assert response["Retry-After"] == "1"


# Retries (Idempotency-Key) and entity tags (ETag / If-Match) ---------------------------------


def test_a_post_retried_with_its_idempotency_key_is_created_once(author):
    client = as_user(author)
    body = {"title": "Once over REST", "description": ""}
    first = client.post("/api/posts/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    again = client.post("/api/posts/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")

    assert first.status_code == again.status_code == 201
    assert again.data["id"] == first.data["id"] and again["ETag"] == first["ETag"] == f'"{first.data["etag"]}"'
    assert Post.objects.filter(title="Once over REST").count() == 1
    other = client.post("/api/posts/", {**body, "title": "Else"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert other.status_code == 422 and not Post.objects.filter(title="Else").exists()


def test_a_signup_retried_with_its_idempotency_key_signs_up_once(client, db):
    body = {"email": "retry@example.com", "password": PASSWORD}
    first = client.post("/api/users/signup/", body, format="json", HTTP_IDEMPOTENCY_KEY="signup-1")
    again = client.post("/api/users/signup/", body, format="json", HTTP_IDEMPOTENCY_KEY="signup-1")
    assert first.status_code == again.status_code == 201 and again.data["id"] == first.data["id"]
    assert again["ETag"] == first["ETag"] == f'"{first.data["etag"]}"'
    assert User.objects.count() == 1


def test_signup_retries_with_their_idempotency_key_do_not_count_against_the_rate(client, db, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"signup": "1/hour"}}
    body = {"email": "retry@example.com", "password": PASSWORD}
    first = client.post("/api/users/signup/", body, format="json", HTTP_IDEMPOTENCY_KEY="signup-2")
    for _ in range(3):
        again = client.post("/api/users/signup/", body, format="json", HTTP_IDEMPOTENCY_KEY="signup-2")
        assert again.status_code == 201 and again.data["id"] == first.data["id"]
    other = {"email": "other@example.com", "password": PASSWORD}
    assert client.post("/api/users/signup/", other, format="json", HTTP_IDEMPOTENCY_KEY="signup-3").status_code == 429
    # The same key with another body is still refused as such, before any rate is counted.
    reused = client.post("/api/users/signup/", other, format="json", HTTP_IDEMPOTENCY_KEY="signup-2")
    assert reused.status_code == 422
    assert User.objects.count() == 1


def test_etag_and_if_match_on_a_post(author):
    client = as_user(author)
    post = make_post(owner=author)
    read = client.get(f"/api/posts/{post.pk}/")
    assert read["ETag"] == f'"{post.etag}"'

    changed = client.patch(f"/api/posts/{post.pk}/", {"title": "New"}, format="json", HTTP_IF_MATCH=read["ETag"])
    assert changed.status_code == 200 and changed["ETag"] != read["ETag"]

    stale = client.put(
        f"/api/posts/{post.pk}/", {"title": "Stale", "description": ""}, format="json", HTTP_IF_MATCH=read["ETag"]
    )
    assert stale.status_code == 412
    assert client.delete(f"/api/posts/{post.pk}/", HTTP_IF_MATCH=read["ETag"]).status_code == 412
    assert Post.objects.get().title == "New"
    assert client.delete(f"/api/posts/{post.pk}/", HTTP_IF_MATCH=changed["ETag"]).status_code == 204
    assert not Post.objects.exists()


def test_an_idempotency_key_of_128_characters_works_and_a_longer_one_is_400(author):
    client = as_user(author)
    body = {"title": "Long key", "description": ""}
    assert client.post("/api/posts/", body, format="json", HTTP_IDEMPOTENCY_KEY="k" * 128).status_code == 201
    assert client.post("/api/posts/", body, format="json", HTTP_IDEMPOTENCY_KEY="k" * 129).status_code == 400
    assert Post.objects.count() == 1
