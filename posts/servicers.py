"""gRPC transport for posts: ``posts.PostController``."""

from grpc_ext.generics import ModelService
from posts.selectors import post_list
from posts.serializers import PostProtoSerializer


class PostService(ModelService):
    serializer_class = PostProtoSerializer

    def get_queryset(self):
        return post_list()
