"""posts.PostController through a real channel: every RPC, as a client sees it."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import empty_pb2, field_mask_pb2

from posts.models import Post
from protos import posts_pb2
from tests.support.factories import make_post
from tests.support.helpers import assert_status


def test_create_then_retrieve_round_trips_every_field_and_the_caller_owns_the_post(posts_stub, user):
    created = posts_stub.Create(posts_pb2.PostCreateRequest(title="Hello", description="First words."))
    row = Post.objects.get(pk=created.id)
    fetched = posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=created.id))

    assert fetched == created
    assert fetched.id == str(row.id)
    assert fetched.owner == str(user.id)
    assert fetched.title == "Hello"
    assert fetched.description == "First words."
    assert fetched.created.ToDatetime(tzinfo=row.created.tzinfo) == row.created
    assert fetched.updated.ToDatetime(tzinfo=row.updated.tzinfo) == row.updated


def test_create_without_title_is_invalid_and_writes_nothing(posts_stub, user):
    assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="title",
    )
    assert Post.objects.count() == 0


def test_create_with_101_character_title_is_invalid(posts_stub, user):
    assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="x" * 101)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="no more than 100 characters",
    )
    assert Post.objects.count() == 0


def test_owner_is_not_in_any_request_message():
    for request in (posts_pb2.PostCreateRequest, posts_pb2.PostUpdateRequest, posts_pb2.PostPartialUpdateRequest):
        assert "owner" not in request.DESCRIPTOR.fields_by_name
    assert "owner" in posts_pb2.Post.DESCRIPTOR.fields_by_name


def test_retrieve_missing_id_is_not_found(posts_stub, transactional_db):
    missing = str(uuid.uuid4())
    assert_status(
        lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=missing)),
        grpc.StatusCode.NOT_FOUND,
        details_contain=missing,
    )


@pytest.mark.parametrize("bad_id", ["", "42", "not-a-uuid", "0" * 33])
def test_retrieve_malformed_id_is_invalid_argument(posts_stub, transactional_db, bad_id):
    assert_status(
        lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=bad_id)), grpc.StatusCode.INVALID_ARGUMENT
    )


def test_update_replaces_every_writable_field_and_nothing_else(posts_stub, user):
    post = make_post(owner=user, title="Old title", description="Old words")
    updated = posts_stub.Update(posts_pb2.PostUpdateRequest(id=str(post.id), title="New title"))
    row = Post.objects.get(pk=post.pk)
    assert (row.owner_id, row.title, row.description) == (user.id, "New title", "")
    assert row.created == post.created
    assert updated.title == "New title" and updated.description == "" and updated.owner == str(user.id)


def test_partial_update_changes_only_the_masked_paths(posts_stub, user):
    post = make_post(owner=user, title="Before", description="Keep me")
    response = posts_stub.PartialUpdate(
        posts_pb2.PostPartialUpdateRequest(
            id=str(post.id),
            title="After",
            description="ignored: not in the mask",
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    row = Post.objects.get(pk=post.pk)
    assert (row.title, row.description, row.owner_id) == ("After", "Keep me", user.id)
    assert response.title == "After" and response.description == "Keep me"


def test_partial_update_with_a_read_only_path_is_invalid(posts_stub, post):
    assert_status(
        lambda: posts_stub.PartialUpdate(
            posts_pb2.PostPartialUpdateRequest(id=str(post.id), update_mask=field_mask_pb2.FieldMask(paths=["created"]))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="created",
    )


def test_partial_update_that_fails_validation_changes_nothing(posts_stub, post):
    assert_status(
        lambda: posts_stub.PartialUpdate(
            posts_pb2.PostPartialUpdateRequest(
                id=str(post.id), title="", update_mask=field_mask_pb2.FieldMask(paths=["title"])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="title",
    )
    assert Post.objects.get(pk=post.pk).title == post.title


def test_destroy_then_retrieve_is_not_found(posts_stub, post):
    assert posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id))) == empty_pb2.Empty()
    assert not Post.objects.filter(pk=post.pk).exists()
    assert_status(
        lambda: posts_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))), grpc.StatusCode.NOT_FOUND
    )
    assert_status(lambda: posts_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id))), grpc.StatusCode.NOT_FOUND)


def test_list_pages_walk_every_row_exactly_once_newest_first(posts_stub, user):
    expected = [str(make_post(owner=user).id) for _ in range(23)][::-1]
    seen, token, pages = [], "", 0
    while True:
        page = posts_stub.List(posts_pb2.PostListRequest(page_size=5, page_token=token))
        assert len(page.posts) <= 5
        seen.extend(message.id for message in page.posts)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    assert pages == 5


def test_list_without_page_size_uses_the_default(posts_stub, user, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "PAGE_SIZE": 3}
    for _ in range(4):
        make_post(owner=user)
    page = posts_stub.List(posts_pb2.PostListRequest())
    assert len(page.posts) == 3 and page.next_page_token


def test_list_page_size_is_capped_at_the_maximum(posts_stub, user, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "MAX_PAGE_SIZE": 2}
    for _ in range(3):
        make_post(owner=user)
    assert len(posts_stub.List(posts_pb2.PostListRequest(page_size=100)).posts) == 2


@pytest.mark.parametrize("token", ["garbage", "eyJvIjpbXX0", "!!!"])
def test_list_with_a_forged_page_token_is_invalid(posts_stub, post, token):
    assert_status(
        lambda: posts_stub.List(posts_pb2.PostListRequest(page_token=token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="page_token",
    )


def test_list_with_negative_page_size_is_invalid(posts_stub, transactional_db):
    assert_status(lambda: posts_stub.List(posts_pb2.PostListRequest(page_size=-1)), grpc.StatusCode.INVALID_ARGUMENT)


def test_stream_sends_exactly_the_rows_there_are(posts_stub, user):
    expected = {str(make_post(owner=user).id) for _ in range(7)}
    responses = list(posts_stub.Stream(posts_pb2.PostStreamRequest()))
    streamed = [message.id for response in responses for message in response.posts]
    assert len(responses) == 1, "seven rows fit in one batch"
    assert len(streamed) == 7
    assert set(streamed) == expected


def test_stream_sends_batches_of_batch_size_rows_in_list_order(posts_stub, user):
    for _ in range(7):
        make_post(owner=user)
    listed = [post.id for post in posts_stub.List(posts_pb2.PostListRequest()).posts]

    responses = list(posts_stub.Stream(posts_pb2.PostStreamRequest(batch_size=3)))

    assert [len(response.posts) for response in responses] == [3, 3, 1]
    assert [post.id for response in responses for post in response.posts] == listed


def test_stream_with_negative_batch_size_is_invalid(posts_stub, transactional_db):
    assert_status(
        lambda: list(posts_stub.Stream(posts_pb2.PostStreamRequest(batch_size=-1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="batch_size",
    )


def test_stream_batch_size_is_capped_by_the_setting(posts_stub, user, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "MAX_STREAM_BATCH_SIZE": 2}
    for _ in range(3):
        make_post(owner=user)

    responses = list(posts_stub.Stream(posts_pb2.PostStreamRequest(batch_size=1000)))

    assert [len(response.posts) for response in responses] == [2, 1]


def test_stream_of_an_empty_table_ends_at_once(posts_stub, transactional_db):
    assert list(posts_stub.Stream(posts_pb2.PostStreamRequest())) == []


def test_partial_update_with_the_star_mask_replaces_every_writable_field(posts_stub, user):
    post = make_post(owner=user, title="Before", description="Old words")
    posts_stub.PartialUpdate(
        posts_pb2.PostPartialUpdateRequest(
            id=str(post.id), title="After", update_mask=field_mask_pb2.FieldMask(paths=["*"])
        )
    )
    row = Post.objects.get(pk=post.pk)
    assert (row.title, row.description) == ("After", "")


def test_partial_update_with_star_and_other_paths_is_invalid(posts_stub, post):
    assert_status(
        lambda: posts_stub.PartialUpdate(
            posts_pb2.PostPartialUpdateRequest(
                id=str(post.id), title="After", update_mask=field_mask_pb2.FieldMask(paths=["*", "title"])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="update_mask",
    )
    assert Post.objects.get(pk=post.pk).title == post.title


def test_a_description_longer_than_10000_characters_is_invalid(posts_stub, user):
    """Bounded so that a List page of posts stays far below the gRPC message size limit."""
    assert_status(
        lambda: posts_stub.Create(posts_pb2.PostCreateRequest(title="Long", description="x" * 10_001)),
        grpc.StatusCode.INVALID_ARGUMENT,
        details_contain="description",
    )
    assert not Post.objects.exists()


def test_a_page_past_the_response_byte_limit_is_cut_short_and_paging_still_sees_every_row(posts_stub, user, settings):
    """Fewer rows than page_size (AIP-158) rather than a message larger than the client accepts."""
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "MAX_LIST_RESPONSE_BYTES": 2_000}
    expected = [str(make_post(owner=user, description="x" * 600).id) for _ in range(9)][::-1]
    seen, sizes, token = [], [], ""
    while True:
        page = posts_stub.List(posts_pb2.PostListRequest(page_size=9, page_token=token))
        assert page.ByteSize() <= 2_000
        sizes.append(len(page.posts))
        seen.extend(post.id for post in page.posts)
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    assert max(sizes) < 9


def test_a_single_row_larger_than_the_byte_limit_still_pages(posts_stub, user, settings):
    settings.GRPC_FRAMEWORK = {**settings.GRPC_FRAMEWORK, "MAX_LIST_RESPONSE_BYTES": 100}
    expected = [str(make_post(owner=user, description="x" * 600).id) for _ in range(3)][::-1]
    first = posts_stub.List(posts_pb2.PostListRequest(page_size=3))
    second = posts_stub.List(posts_pb2.PostListRequest(page_size=3, page_token=first.next_page_token))
    assert [post.id for post in first.posts] == expected[:1]
    assert [post.id for post in second.posts] == expected[1:2]
