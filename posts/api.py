"""REST transport for posts: thin DRF views over ``posts.services`` and ``posts.selectors``."""

from __future__ import annotations

from rest_framework import generics, serializers
from rest_framework.permissions import IsAuthenticated

from posts.models import Post
from posts.permissions import RestIsOwnerOrStaff
from posts.selectors import post_list
from posts.services import post_create, post_update

TRUE_VALUES = {"1", "true", "yes", "on"}


class PostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Post
        fields = ["id", "owner", "title", "description", "created", "updated"]
        read_only_fields = ["id", "owner", "created", "updated"]
        # PUT replaces every writable field, as gRPC's Update does: a field left out is reset.
        extra_kwargs = {"description": {"default": ""}}

    def create(self, validated_data) -> Post:
        return post_create(**validated_data)

    def update(self, instance: Post, validated_data) -> Post:
        return post_update(post=instance, **validated_data)


class PostListView(generics.ListCreateAPIView):
    """List posts (``?mine=true``: only the caller's), or create one owned by the caller."""

    serializer_class = PostSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        mine = self.request.query_params.get("mine", "").lower() in TRUE_VALUES
        return post_list(owner=self.request.user if mine else None)

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)


class PostDetailView(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = PostSerializer
    permission_classes = [IsAuthenticated, RestIsOwnerOrStaff]

    def get_queryset(self):
        return post_list()
