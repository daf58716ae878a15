"""Every action goes through the service's hooks: ``get_serializer`` for messages, ``perform_update`` for writes."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from grpc_ext.exceptions import Aborted, FailedPrecondition
from grpc_ext.generics import RequestCycle
from grpc_ext.server.transport import serve_in_background
from posts.models import Post
from posts.serializers import PostProtoSerializer
from posts.servicers import PostService
from protos import posts_pb2, posts_pb2_grpc
from tests.support.factories import make_post
from tests.support.helpers import with_metadata


class ShoutingPostSerializer(PostProtoSerializer):
    """Titles in capitals: a representation the compiled fast path cannot reproduce."""

    class Meta(PostProtoSerializer.Meta):
        pass

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["title"] = data["title"].upper()
        return data


class HookedPostService(PostService):
    """Returns its own serializer, and marks every update it saves."""

    def get_serializer(self, *args, **kwargs):
        kwargs.setdefault("context", self.get_serializer_context())
        return ShoutingPostSerializer(*args, **kwargs)

    def perform_update(self, serializer):
        super().perform_update(serializer)
        Post.objects.filter(pk=serializer.instance.pk).update(description=f"saved by perform_update ({self.action})")


@pytest.fixture(scope="module")
def serve_posts(django_db_setup, django_db_blocker):
    """Return ``address(service_class)``: the address of a server of that PostController (one per class and module)."""
    servers = {}

    def address(service_class) -> str:
        if service_class not in servers:
            with django_db_blocker.unblock():
                servers[service_class] = serve_in_background(
                    handlers_hook=lambda server: posts_pb2_grpc.add_PostControllerServicer_to_server(
                        service_class.as_servicer(), server
                    ),
                    max_workers=2,
                )
        return f"127.0.0.1:{servers[service_class].port}"

    yield address
    for server in servers.values():
        server.stop(None).wait()


@pytest.fixture
def hooked_stub(serve_posts, user):
    with grpc.insecure_channel(serve_posts(HookedPostService)) as channel:
        yield posts_pb2_grpc.PostControllerStub(with_metadata(channel, user))


def test_retrieve_list_and_stream_use_the_serializer_of_get_serializer(hooked_stub, user):
    post = make_post(owner=user, title="quiet")

    assert hooked_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))).title == "QUIET"
    assert [p.title for p in hooked_stub.List(posts_pb2.PostListRequest()).posts] == ["QUIET"]
    streamed = [p.title for batch in hooked_stub.Stream(posts_pb2.PostStreamRequest()) for p in batch.posts]
    assert streamed == ["QUIET"]
    assert hooked_stub.Create(posts_pb2.PostCreateRequest(title="new")).title == "NEW"


@pytest.mark.parametrize("paths", [["title"], [], ["*"]], ids=["mask", "empty mask", "full replacement"])
def test_partial_update_saves_through_perform_update_as_update_does(hooked_stub, user, paths):
    post = make_post(owner=user, title="before")
    mask = field_mask_pb2.FieldMask(paths=paths)

    answer = hooked_stub.PartialUpdate(
        posts_pb2.PostPartialUpdateRequest(id=str(post.id), title="after", update_mask=mask)
    )

    assert answer.title == "AFTER"
    post.refresh_from_db()
    assert (post.title, post.description) == ("after", "saved by perform_update (PartialUpdate)")
    hooked_stub.Update(posts_pb2.PostUpdateRequest(id=str(post.id), title="again"))
    post.refresh_from_db()
    assert (post.title, post.description) == ("again", "saved by perform_update (Update)")


class SecondWriteFailsPostService(PostService):
    """Each write hook does what the framework's does, then a second write that fails."""

    def fail_after(self, instance) -> None:
        Post.objects.filter(pk=instance.pk).update(description="second write")
        raise Aborted("The second write failed.")

    def perform_create(self, serializer):
        super().perform_create(serializer)
        self.fail_after(serializer.instance)

    def perform_update(self, serializer):
        super().perform_update(serializer)
        self.fail_after(serializer.instance)

    def perform_destroy(self, instance):
        pk = instance.pk
        super().perform_destroy(instance)
        Post.objects.filter(pk=pk).update(description="second write")
        raise Aborted("The second write failed.")


@pytest.fixture
def failing_stub(serve_posts, user):
    with grpc.insecure_channel(serve_posts(SecondWriteFailsPostService)) as channel:
        yield posts_pb2_grpc.PostControllerStub(with_metadata(channel, user))


def test_an_overridden_write_hook_that_fails_after_saving_leaves_nothing_written(failing_stub, user):
    # post_create and post_update are atomic by themselves (one statement), so the framework's
    # own hooks open no transaction; an override still runs in one as a whole.
    post = make_post(owner=user, title="kept", description="as it was")
    mask = field_mask_pb2.FieldMask(paths=["title"])
    calls = {
        "Create": lambda: failing_stub.Create(posts_pb2.PostCreateRequest(title="never")),
        "Update": lambda: failing_stub.Update(posts_pb2.PostUpdateRequest(id=str(post.id), title="never")),
        "PartialUpdate": lambda: failing_stub.PartialUpdate(
            posts_pb2.PostPartialUpdateRequest(id=str(post.id), title="never", update_mask=mask)
        ),
        "Destroy": lambda: failing_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id))),
    }
    for action, call in calls.items():
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.ABORTED, action
        assert error.value.details() == "The second write failed.", action
        assert list(Post.objects.values_list("title", "description")) == [("kept", "as it was")], action


class TenantRequestCycle(RequestCycle):
    """Refuses calls without an ``x-tenant`` header before any service runs, and counts the calls it finished."""

    finished: list[str] = []

    def check_call(self, call):
        super().check_call(call)
        if not dict(call.invocation_metadata()).get("x-tenant"):
            raise FailedPrecondition("x-tenant: this service needs the caller's tenant.")

    def request_finished(self):
        super().request_finished()
        TenantRequestCycle.finished.append(self.action)


class TenantPostService(PostService):
    request_cycle_class = TenantRequestCycle


def test_a_step_of_the_request_cycle_is_overridden_by_a_subclass_named_on_the_service(serve_posts, user):
    post = make_post(owner=user, title="tenanted")
    TenantRequestCycle.finished.clear()
    with grpc.insecure_channel(serve_posts(TenantPostService)) as channel:
        stub = posts_pb2_grpc.PostControllerStub(with_metadata(channel, user))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == "x-tenant: this service needs the caller's tenant."

        tenant = (("x-tenant", "acme"),)
        assert stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id)), metadata=tenant).title == "tenanted"
        streamed = [
            p.title for batch in stub.Stream(posts_pb2.PostStreamRequest(), metadata=tenant) for p in batch.posts
        ]
        assert streamed == ["tenanted"]
    assert TenantRequestCycle.finished == ["Retrieve", "Retrieve", "Stream"]
