"""List filters, order_by and page tokens, and Stream's chunked reading, as a client sees them."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest

from grpc_ext.signals import grpc_request_finished, grpc_request_started
from posts.models import Post
from posts.servicers import PostService
from protos import posts_pb2, users_pb2
from tests.support.factories import make_post, make_user
from tests.support.helpers import assert_status


def walk(stub, request_class, results: str, **fields) -> list:
    """Return every row of a listing, page by page."""
    rows, token = [], ""
    while True:
        page = stub.List(request_class(page_size=fields.pop("page_size", 2), page_token=token, **fields))
        rows.extend(getattr(page, results))
        token = page.next_page_token
        if not token:
            return rows


def test_posts_filtered_by_owner(posts_stub, user):
    mine = {str(make_post(owner=user).id) for _ in range(3)}
    make_post()
    assert {row.id for row in walk(posts_stub, posts_pb2.PostListRequest, "posts", owner=str(user.id))} == mine


def test_owner_me_lists_only_the_callers_posts(posts_stub, user):
    mine = {str(make_post(owner=user).id) for _ in range(3)}
    make_post()
    assert {row.id for row in walk(posts_stub, posts_pb2.PostListRequest, "posts", owner="me")} == mine


def test_posts_filtered_by_title_text_ignore_case(posts_stub, user):
    wanted = make_post(owner=user, title="Deploying gRPC")
    make_post(owner=user, title="Something else")
    rows = walk(posts_stub, posts_pb2.PostListRequest, "posts", title_contains="grpc")
    assert [row.id for row in rows] == [str(wanted.id)]


def test_users_filtered_by_whole_email_ignore_case(users_stub, transactional_db):
    wanted = make_user(email="ada@example.com")
    make_user(email="ada.lovelace@example.com")
    rows = walk(users_stub, users_pb2.UserListRequest, "users", email="ADA@example.com")
    assert [row.id for row in rows] == [str(wanted.id)]


def test_owner_filter_that_is_not_a_uuid_is_invalid(posts_stub, transactional_db):
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(owner="42")),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="owner",
    )


def test_order_by_title_then_created_desc(posts_stub, user):
    for title in ["b", "a", "c", "a"]:
        make_post(owner=user, title=title)
    expected = [str(row.id) for row in Post.objects.order_by("title", "-created", "id")]
    rows = walk(posts_stub, posts_pb2.PostListRequest, "posts", order_by="title, created desc")
    assert [row.id for row in rows] == expected
    assert [row.title for row in rows] == ["a", "a", "b", "c"]


@pytest.mark.parametrize("order_by", ["password", "title sideways", "owner", "created desc asc"])
def test_order_by_an_unknown_field_or_direction_is_invalid(users_stub, posts_stub, transactional_db, order_by):
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(order_by=order_by)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="order_by",
    )


@pytest.mark.parametrize(
    "changed",
    [{"title_contains": "other"}, {"owner": str(uuid.uuid4())}, {"order_by": "title"}],
    ids=["title", "owner", "order_by"],
)
def test_page_token_used_with_other_filters_or_ordering_is_invalid(posts_stub, user, changed):
    for _ in range(3):
        make_post(owner=user, title="Post")
    first = posts_stub.List(posts_pb2.PostListRequest(page_size=1, owner=str(user.id), title_contains="post"))
    assert first.next_page_token
    request = {"owner": str(user.id), "title_contains": "post", **changed}
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(page_size=1, page_token=first.next_page_token, **request)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="page_token",
    )


def test_paging_while_rows_are_inserted_and_deleted_sees_every_row_once(posts_stub, user):
    """Keyset tokens: rows written between pages, before and after the cursor, never make a walk repeat or skip."""
    original = [make_post(owner=user, title=f"t{index:02}") for index in range(20)]
    seen, every_id, token, pages = [], [], "", 0
    while True:
        page = posts_stub.List(posts_pb2.PostListRequest(page_size=3, page_token=token, order_by="title"))
        every_id.extend(row.id for row in page.posts)
        seen.extend(row.id for row in page.posts if "inserted" not in row.title)
        pages += 1
        for index in (0, pages * 3 - 1, 19):  # before the cursor, near it, after the last row
            make_post(owner=user, title=f"t{index:02} inserted")
        if pages == 2:
            # The row the token points at, and one not reached yet.
            Post.objects.filter(pk__in=[page.posts[-1].id, original[15].pk]).delete()
        token = page.next_page_token
        if not token:
            break
    assert seen == [str(post.id) for index, post in enumerate(original) if index != 15]
    assert len(every_id) == len(set(every_id))


def test_cancelled_stream_stops_reading_rows(posts_stub, user, monkeypatch):
    """Stream sends batches of ``batch_size`` rows and reads no batch after the one in hand once cancelled."""
    for _ in range(30):
        make_post(owner=user)
    server_saw_cancel, finished = threading.Event(), threading.Event()
    batches_read = []
    read_batches = PostService.get_stream_responses

    def counting_batches(self, queryset, size):
        for batch in read_batches(self, queryset, size):
            batches_read.append(len(batch.posts))
            if len(batches_read) == 2:  # the second batch waits for the cancellation
                server_saw_cancel.wait(timeout=10)
            yield batch

    def on_started(sender, context, **kwargs):
        if sender is PostService:
            context.add_callback(server_saw_cancel.set)

    def on_finished(sender, **kwargs):
        if sender is PostService:
            finished.set()

    monkeypatch.setattr(PostService, "get_stream_responses", counting_batches)
    grpc_request_started.connect(on_started)
    grpc_request_finished.connect(on_finished)
    try:
        call = posts_stub.Stream(posts_pb2.PostStreamRequest(batch_size=5))
        first = next(call)
        call.cancel()
        assert finished.wait(timeout=10), "the server never finished the cancelled Stream"
    finally:
        grpc_request_started.disconnect(on_started)
        grpc_request_finished.disconnect(on_finished)
    assert len(first.posts) == 5
    # The second batch, in hand when the cancellation came, is the last one read (of six).
    assert batches_read in ([5], [5, 5])


def test_order_by_naming_a_field_twice_is_invalid(posts_stub, transactional_db):
    """A repeated field would square the size of the keyset condition of the next page."""
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(order_by=", ".join(["title"] * 50))),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="more than once",
    )


@pytest.mark.parametrize("field", ["title_contains", "owner"])
def test_a_null_character_in_a_filter_is_invalid(posts_stub, transactional_db, field):
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(**{field: "a\x00"})),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="null characters",
    )


def test_a_page_token_edited_by_the_client_is_invalid(posts_stub, user):
    for _ in range(3):
        make_post(owner=user)
    token = posts_stub.List(posts_pb2.PostListRequest(page_size=1)).next_page_token
    body, _, signature = token.rpartition(":")
    tampered = f"{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}:{signature}"
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(page_size=1, page_token=tampered)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="page_token",
    )
