"""The service base: a servicer for partial services and checked construction."""

from __future__ import annotations

import grpc
import pytest
from django_grpc_framework import mixins as framework_mixins

from grpc_ext.server.transport import serve_in_background
from grpc_ext.services.generics import GenericService
from grpc_ext.services.permissions import AllowAny
from posts.selectors import post_list
from posts.serializers import PostProtoSerializer
from protos import posts_pb2, posts_pb2_grpc
from tests.support.helpers import assert_status


class RetrieveOnlyPostService(framework_mixins.RetrieveModelMixin, GenericService):
    serializer_class = PostProtoSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get_queryset(self):
        return post_list()


@pytest.fixture
def retrieve_only_stub(transactional_db):
    def add_services(server) -> None:
        posts_pb2_grpc.add_PostControllerServicer_to_server(RetrieveOnlyPostService.as_servicer(), server)

    server = serve_in_background(handlers_hook=add_services, max_workers=2)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield posts_pb2_grpc.PostControllerStub(channel)
    server.stop(None).wait()


def test_an_rpc_the_service_does_not_define_is_unimplemented(retrieve_only_stub, post):
    assert retrieve_only_stub.Retrieve(posts_pb2.PostRetrieveRequest(id=str(post.id))).title == post.title
    assert_status(
        lambda: retrieve_only_stub.Destroy(posts_pb2.PostDestroyRequest(id=str(post.id))),
        grpc.StatusCode.UNIMPLEMENTED,
        details_contain="RetrieveOnlyPostService does not implement Destroy",
    )


def test_as_servicer_refuses_a_keyword_that_is_not_an_attribute():
    with pytest.raises(TypeError, match="invalid keyword 'colour'"):
        RetrieveOnlyPostService.as_servicer(colour="blue")
