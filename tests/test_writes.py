"""BatchCreate (AIP-233), request_id retries (AIP-155) and etags (AIP-154), through a real channel."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.management import call_command
from django.db import connection
from django.db.models.signals import post_init
from django.utils import timezone
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rest_framework import serializers

from grpc_ext.models import IdempotencyRecord
from grpc_ext.wire.bulk import ItemValidationError, new_instances
from grpc_ext.wire.serializers import checks_as_model_field
from posts.models import Post
from posts.serializers import PostProtoSerializer
from posts.services import post_create_many, post_update
from protos import posts_pb2, posts_pb2_grpc, users_pb2
from tests.support.factories import PASSWORD, make_post, make_user
from tests.support.helpers import (
    assert_status,
    auth_metadata,
    bad_request_fields,
    database_url_of_this_run,
    with_metadata,
)
from users.models import User


def concurrently(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls at the same moment in threads; return each one's result or exception, in order."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def create_requests(count: int, prefix: str = "Batch") -> list[posts_pb2.PostCreateRequest]:
    return [posts_pb2.PostCreateRequest(title=f"{prefix} {index}", description=f"#{index}") for index in range(count)]


# BatchCreate -------------------------------------------------------------------------------


def test_batch_create_answers_in_request_order_and_makes_the_caller_the_owner(posts_stub, user):
    response = posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=create_requests(5)))

    assert [post.title for post in response.posts] == [f"Batch {index}" for index in range(5)]
    assert {post.owner for post in response.posts} == {str(user.pk)}
    stored = {str(post.id): post for post in Post.objects.filter(owner=user)}
    assert set(stored) == {post.id for post in response.posts}
    assert all(post.etag and stored[post.id].etag == post.etag for post in response.posts)
    assert [stored[post.id].description for post in response.posts] == [f"#{index}" for index in range(5)]


def test_batch_create_with_one_invalid_item_names_it_and_writes_nothing(posts_stub, user):
    requests = create_requests(5)
    requests[3].title = ""
    error = assert_status(
        lambda: posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=requests)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="requests[3].title",
    )
    assert bad_request_fields(error) == ["requests[3].title"]
    assert not Post.objects.exists()


def test_batch_create_of_more_than_max_batch_size_is_invalid_argument(posts_stub, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "MAX_BATCH_SIZE": 3}
    error = assert_status(
        lambda: posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=create_requests(4))),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="at most 3",
    )
    assert bad_request_fields(error) == ["requests"]
    posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=create_requests(3)))
    assert Post.objects.count() == 3


def test_an_oversized_signup_batch_is_invalid_argument_and_uses_no_rate_limit(anon_users_stub, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "MAX_BATCH_SIZE": 2}
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "signup": "2/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    items = [users_pb2.UserCreateRequest(email=f"u{index}@example.com", password=PASSWORD) for index in range(3)]
    assert_status(
        lambda: anon_users_stub.BatchCreate(users_pb2.UserBatchCreateRequest(requests=items)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert len(anon_users_stub.BatchCreate(users_pb2.UserBatchCreateRequest(requests=items[:2])).users) == 2


def test_batch_create_of_max_batch_size_items_writes_them_all(posts_stub):
    response = posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=create_requests(1000)))
    assert len(response.posts) == 1000 and Post.objects.count() == 1000


def test_batch_create_needs_create_permission(anon_posts_stub):
    assert_status(
        lambda: anon_posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=create_requests(2))),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert not Post.objects.exists()


def test_signup_batch_counts_each_user_against_the_signup_rate(anon_users_stub, settings):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "signup": "3/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}

    def signups(*names: str) -> users_pb2.UserBatchCreateRequest:
        items = [users_pb2.UserCreateRequest(email=f"{name}@example.com", password=PASSWORD) for name in names]
        return users_pb2.UserBatchCreateRequest(requests=items)

    assert_status(lambda: anon_users_stub.BatchCreate(signups("a", "b", "c", "d")), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert not User.objects.exists()  # a refused batch uses none of the budget
    assert len(anon_users_stub.BatchCreate(signups("a", "b")).users) == 2
    assert_status(lambda: anon_users_stub.BatchCreate(signups("c", "d")), grpc.StatusCode.RESOURCE_EXHAUSTED)
    anon_users_stub.Create(users_pb2.UserCreateRequest(email="c@example.com", password=PASSWORD))
    assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="e@example.com", password=PASSWORD)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert User.objects.count() == 3


def test_a_duplicate_email_in_a_signup_batch_is_already_exists_on_that_item(anon_users_stub):
    items = [
        users_pb2.UserCreateRequest(email="same@example.com", password=PASSWORD),
        users_pb2.UserCreateRequest(email="Same@Example.com", password=PASSWORD),
    ]
    error = assert_status(
        lambda: anon_users_stub.BatchCreate(users_pb2.UserBatchCreateRequest(requests=items)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert bad_request_fields(error) == ["requests[1].email"]
    assert not User.objects.exists()


# request_id (AIP-155) ----------------------------------------------------------------------


def test_a_retried_create_returns_the_first_result_and_writes_once(posts_stub):
    request = posts_pb2.PostCreateRequest(title="Once", request_id=str(uuid.uuid4()))
    first = posts_stub.Create(request)
    second = posts_stub.Create(request)

    assert second == first
    assert Post.objects.filter(title="Once").count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_the_same_request_id_with_another_request_is_invalid_argument(posts_stub):
    request_id = str(uuid.uuid4())
    posts_stub.Create(posts_pb2.PostCreateRequest(title="First", request_id=request_id))
    error = assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="Other", request_id=request_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="different request",
    )
    assert bad_request_fields(error) == ["request_id"]
    assert list(Post.objects.values_list("title", flat=True)) == ["First"]


def test_a_request_id_that_is_not_a_uuid_is_invalid_argument(posts_stub):
    error = assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="x", request_id="retry-1")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_request_fields(error) == ["request_id"]
    assert not Post.objects.exists()


def test_request_ids_are_scoped_per_caller(posts_stub, grpc_channel):
    request = posts_pb2.PostCreateRequest(title="Mine", request_id=str(uuid.uuid4()))
    other_stub = posts_pb2_grpc.PostControllerStub(with_metadata(grpc_channel, make_user()))
    mine, theirs = posts_stub.Create(request), other_stub.Create(request)
    assert mine.id != theirs.id and mine.owner != theirs.owner
    assert Post.objects.count() == 2


def test_a_failed_create_is_not_remembered(posts_stub):
    request_id = str(uuid.uuid4())
    assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="", request_id=request_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert posts_stub.Create(posts_pb2.PostCreateRequest(title="Fixed", request_id=request_id)).title == "Fixed"


def test_concurrent_duplicate_creates_write_once_and_all_get_the_winners_result(posts_stub):
    request = posts_pb2.PostCreateRequest(title="Raced", request_id=str(uuid.uuid4()))
    results = concurrently([lambda: posts_stub.Create(request, timeout=30)] * 6)

    assert all(isinstance(result, posts_pb2.Post) for result in results), results
    assert len({result.id for result in results}) == 1
    assert Post.objects.filter(title="Raced").count() == 1


def test_concurrent_duplicate_batches_write_once(posts_stub):
    request = posts_pb2.PostBatchCreateRequest(requests=create_requests(20, "Raced"), request_id=str(uuid.uuid4()))
    results = concurrently([lambda: posts_stub.BatchCreate(request, timeout=30)] * 4)

    assert all(isinstance(result, posts_pb2.PostBatchCreateResponse) for result in results), results
    assert len({tuple(post.id for post in result.posts) for result in results}) == 1
    assert Post.objects.count() == 20


def test_a_retried_signup_returns_the_same_user_and_concurrent_ones_sign_up_once(anon_users_stub):
    request = users_pb2.UserCreateRequest(email="retry@example.com", password=PASSWORD, request_id=str(uuid.uuid4()))
    results = concurrently([lambda: anon_users_stub.Create(request, timeout=30)] * 4)
    assert all(isinstance(result, users_pb2.User) for result in results), results
    assert len({result.id for result in results}) == 1
    assert anon_users_stub.Create(request).id == results[0].id
    assert User.objects.count() == 1


def test_retries_of_a_remembered_signup_are_answered_without_counting_against_the_rate(anon_users_stub, settings):
    """A retry writes nothing, so it spends no rate limit: a client whose signup timed out always gets its user."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "signup": "2/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    request = users_pb2.UserCreateRequest(email="retry@example.com", password=PASSWORD, request_id=str(uuid.uuid4()))
    first = anon_users_stub.Create(request)
    for _ in range(5):
        assert anon_users_stub.Create(request).id == first.id
    batch = users_pb2.UserBatchCreateRequest(
        requests=[users_pb2.UserCreateRequest(email="batch@example.com", password=PASSWORD)],
        request_id=str(uuid.uuid4()),
    )
    batch_first = anon_users_stub.BatchCreate(batch)
    for _ in range(3):
        assert anon_users_stub.BatchCreate(batch).users[0].id == batch_first.users[0].id
    # New signups still count: the rate (2) is spent by the two that wrote.
    assert_status(
        lambda: anon_users_stub.Create(users_pb2.UserCreateRequest(email="new@example.com", password=PASSWORD)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert User.objects.count() == 2


def test_a_signup_retry_with_another_password_does_not_get_the_user(anon_users_stub):
    request_id = str(uuid.uuid4())
    anon_users_stub.Create(users_pb2.UserCreateRequest(email="a@example.com", password=PASSWORD, request_id=request_id))
    assert_status(
        lambda: anon_users_stub.Create(
            users_pb2.UserCreateRequest(email="a@example.com", password="another-passphrase", request_id=request_id)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert PASSWORD.encode() not in bytes(IdempotencyRecord.objects.get().fingerprint, "ascii")


def test_request_id_on_a_batch_item_is_invalid_argument(posts_stub):
    requests = create_requests(2)
    requests[1].request_id = str(uuid.uuid4())
    error = assert_status(
        lambda: posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=requests)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_request_fields(error) == ["requests[1].request_id"]


def test_expired_records_are_cleared_and_fresh_ones_kept(posts_stub):
    old = posts_pb2.PostCreateRequest(title="Old", request_id=str(uuid.uuid4()))
    posts_stub.Create(old)
    IdempotencyRecord.objects.update(created=timezone.now() - timedelta(hours=25))
    posts_stub.Create(posts_pb2.PostCreateRequest(title="New", request_id=str(uuid.uuid4())))

    call_command("clearidempotencyrecords", verbosity=0)
    assert IdempotencyRecord.objects.count() == 1
    posts_stub.Create(old)  # forgotten: a new write
    assert Post.objects.filter(title="Old").count() == 2


@pytest.fixture
def other_server_process(transactional_db):
    """Serve the test database from a ``grpcrunserver`` of its own: another process, as after a restart."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    env = {**os.environ, "DATABASE_URL": database_url_of_this_run(), "LOG_LEVEL": "WARNING", "DEBUG": "true"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcrunserver", address, "--max-workers", "2"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(address) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30)
            yield channel
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_retry_answered_by_another_server_process_returns_the_first_result(posts_stub, user, other_server_process):
    request = posts_pb2.PostCreateRequest(title="Across processes", request_id=str(uuid.uuid4()))
    first = posts_stub.Create(request)
    elsewhere = posts_pb2_grpc.PostControllerStub(other_server_process).Create(
        request, metadata=auth_metadata(user), timeout=30
    )
    assert elsewhere == first
    assert Post.objects.filter(title="Across processes").count() == 1


# etag (AIP-154) ---------------------------------------------------------------------------


def test_every_write_changes_the_etag(posts_stub, post):
    read = posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)))
    assert read.etag == post.etag
    updated = posts_stub.Update(posts_pb2.PostUpdateRequest(id=post.id.hex, title=post.title, etag=read.etag))
    again = posts_stub.Update(posts_pb2.PostUpdateRequest(id=str(post.id), title=post.title, etag=updated.etag))
    assert len({read.etag, updated.etag, again.etag}) == 3
    assert Post.objects.get().etag == again.etag


@pytest.mark.parametrize("rpc", ["Update", "PartialUpdate", "Destroy"])
def test_a_stale_etag_is_aborted_and_changes_nothing(posts_stub, post, rpc):
    stale = post.etag
    post_update(post=post, title="Changed elsewhere")
    request = {
        "Update": posts_pb2.PostUpdateRequest(id=str(post.id), title="Mine", etag=stale),
        "PartialUpdate": posts_pb2.PostPartialUpdateRequest(id=str(post.id), title="Mine", etag=stale),
        "Destroy": posts_pb2.PostDestroyRequest(id=str(post.id), etag=stale),
    }[rpc]
    assert_status(lambda: getattr(posts_stub, rpc)(request), grpc.StatusCode.ABORTED, details_contain="stale")
    assert Post.objects.get().title == "Changed elsewhere"


def test_a_current_etag_lets_destroy_and_partial_update_through(posts_stub, post):
    updated = posts_stub.PartialUpdate(posts_pb2.PostPartialUpdateRequest(id=str(post.id), title="New", etag=post.etag))
    assert updated.title == "New" and updated.etag != post.etag
    posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id), etag=updated.etag))
    assert not Post.objects.exists()


def test_of_two_clients_racing_with_one_etag_one_writes_and_the_other_is_aborted(posts_stub, post, grpc_channel):
    staff_stub = posts_pb2_grpc.PostControllerStub(with_metadata(grpc_channel, make_user(is_staff=True)))
    etag = posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))).etag
    for _ in range(3):
        owner_request = posts_pb2.PostUpdateRequest(id=str(post.id), title="owner", etag=etag)
        staff_request = posts_pb2.PostUpdateRequest(id=str(post.id), title="staff", etag=etag)
        results = concurrently(
            [lambda: posts_stub.Update(owner_request), lambda: staff_stub.Update(staff_request)]  # noqa: B023
        )
        won = [result for result in results if isinstance(result, posts_pb2.Post)]
        lost = [result for result in results if isinstance(result, grpc.RpcError)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].code() == grpc.StatusCode.ABORTED
        stored = Post.objects.get()
        assert (stored.title, stored.etag) == (won[0].title, won[0].etag)
        etag = won[0].etag


def test_writes_without_an_etag_still_work_and_users_carry_one(users_stub, user):
    updated = users_stub.PartialUpdate(users_pb2.UserPartialUpdateRequest(id=str(user.pk), email="new@example.com"))
    assert updated.etag and updated.etag != user.etag
    assert_status(
        lambda: users_stub.Update(users_pb2.UserUpdateRequest(id=str(user.pk), email="x@example.com", etag=user.etag)),
        grpc.StatusCode.ABORTED,
    )


def test_a_permission_error_comes_before_a_stale_etag(anon_posts_stub, post):
    stranger = make_user()
    assert_status(
        lambda: anon_posts_stub.Destroy(
            posts_pb2.PostDestroyRequest(id=str(post.id), etag="stale"), metadata=auth_metadata(stranger)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


def test_an_admin_write_changes_the_etag(client, post):
    admin = make_user(email="admin@example.com", is_staff=True, is_superuser=True)
    client.force_login(admin)
    before = post.etag
    response = client.post(
        f"/admin/posts/post/{post.pk}/change/",
        {"owner": str(post.owner_id), "title": "Edited in the admin", "description": ""},
    )
    assert response.status_code == 302, response.content[:500]
    stored = Post.objects.get()
    assert stored.title == "Edited in the admin" and stored.etag != before


def test_bulk_created_rows_each_get_their_own_etag(user):
    posts = Post.objects.bulk_create([Post(owner=user, title=str(index)) for index in range(3)])
    assert len({post.etag for post in posts}) == 3
    assert make_post(owner=user).etag


def test_batch_create_stores_text_exactly_as_sent(posts_stub):
    """Tabs, newlines, backslashes and non-ASCII text survive the bulk insert (COPY on PostgreSQL) unchanged."""
    tricky = ["tab\there", "line\nbreak\r\nend", "back\\slash \\N", "naïve — 東京 🎉", "\\.", ""]
    requests = [posts_pb2.PostCreateRequest(title=f"t{index}", description=text) for index, text in enumerate(tricky)]
    response = posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=requests))

    assert [post.description for post in response.posts] == tricky
    stored = dict(Post.objects.values_list("title", "description"))
    assert [stored[f"t{index}"] for index in range(len(tricky))] == tricky
    for post in response.posts:
        assert posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=post.id)) == post


def test_a_model_rule_still_rejects_a_batch_item_by_its_position(posts_stub, monkeypatch):
    """BatchCreate skips only the field checks the serializer already ran: a model's own ``clean()`` still runs."""

    def clean(post: Post) -> None:
        if post.title == "Forbidden":
            raise DjangoValidationError({"title": "This title is reserved."})

    monkeypatch.setattr(Post, "clean", clean)
    requests = create_requests(5)
    requests[2].title = "Forbidden"
    error = assert_status(
        lambda: posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=requests)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="This title is reserved.",
    )
    assert bad_request_fields(error) == ["requests[2].title"]
    assert not Post.objects.exists()


def test_bulk_create_checks_fields_no_serializer_checked(user):
    """Without ``checked_fields`` every field goes through ``full_clean``, and the error names the item."""
    items = [{"owner": user, "title": "fine"}, {"owner": user, "title": "x" * 101}]
    with pytest.raises(ItemValidationError) as raised:
        post_create_many(items=items)
    assert raised.value.index == 1 and "title" in raised.value.message_dict
    assert not Post.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY; bulk_create stamps each row as Django does")
def test_batch_create_stamps_every_row_of_a_batch_with_one_time(posts_stub):
    """A batch is one statement in one transaction: its rows share one ``created`` and ``updated`` time."""
    response = posts_stub.BatchCreate(posts_pb2.PostBatchCreateRequest(requests=create_requests(3)))

    stamps = {(stamp.seconds, stamp.nanos) for post in response.posts for stamp in (post.created, post.updated)}
    assert len(stamps) == 1
    stored = set(Post.objects.values_list("created", "updated"))
    assert len(stored) == 1 and len(set(stored.pop())) == 1


def test_new_instances_builds_what_the_model_constructor_builds(user, django_assert_num_queries):
    [built] = new_instances(Post, [{"owner": user, "title": "Built"}])
    expected = Post(owner=user, title="Built", id=built.id, etag=built.etag)

    assert vars(built).keys() == vars(expected).keys()
    assert {k: v for k, v in vars(built).items() if k != "_state"} == {
        k: v for k, v in vars(expected).items() if k != "_state"
    }
    assert built._state.adding and built._state.db is None
    with django_assert_num_queries(0):
        assert built.owner is user


def test_new_instances_sends_post_init_to_a_listening_receiver(user):
    """Instances are made without ``Model.__init__`` only when nothing would see the difference."""
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.title)

    post_init.connect(receiver, sender=Post)
    try:
        posts = new_instances(Post, [{"owner": user, "title": "a"}, {"owner": user, "title": "b"}])
    finally:
        post_init.disconnect(receiver, sender=Post)
    assert seen == ["a", "b"] and [post.owner for post in posts] == [user, user]


@pytest.mark.parametrize(
    ("field", "checked"),
    [
        (serializers.CharField(max_length=100), True),
        (serializers.CharField(), False),  # no max_length: the model's would not run
        (serializers.CharField(max_length=100, allow_blank=True), False),
        (serializers.CharField(max_length=100, required=False), False),  # an omitted title would be blank
        (serializers.CharField(max_length=100, allow_null=True), False),
    ],
)
def test_only_fields_that_run_every_model_check_count_as_checked(field, checked):
    assert checks_as_model_field(field, Post._meta.get_field("title")) is checked


def test_the_post_serializer_checks_title_and_description_as_the_model_does():
    assert PostProtoSerializer().model_checked_fields() == {"title", "description"}
