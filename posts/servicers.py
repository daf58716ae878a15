"""gRPC transport for posts: ``posts.PostController``."""

from django.db import transaction

from grpc_ext.generics import ModelService
from grpc_ext.permissions import IsAuthenticated
from posts.permissions import IsOwnerOrStaff, IsVerifiedToPost
from posts.selectors import post_list
from posts.serializers import PostProtoSerializer


class PostService(ModelService):
    serializer_class = PostProtoSerializer
    permission_classes = [IsAuthenticated, IsVerifiedToPost, IsOwnerOrStaff]

    def get_queryset(self):
        return post_list()

    def perform_create(self, serializer):
        """Make the caller the owner of the new post."""
        with transaction.atomic():
            serializer.save(owner=self.user)
