"""REST transport for posts: thin DRF views over ``posts.services`` and ``posts.selectors``.

Posts are read and written by the serializer gRPC uses, so the fields a client
may see and write, and their validation, are declared once.
"""

from __future__ import annotations

from rest_framework import generics
from rest_framework.permissions import IsAuthenticated

from grpc_ext.rest import ETagViewMixin, IdempotentCreateMixin
from posts.permissions import RestIsOwnerOrStaff
from posts.selectors import post_list
from posts.serializers import PostProtoSerializer
from users.models import User

TRUE_VALUES = {"1", "true", "yes", "on"}


class PostListView(IdempotentCreateMixin, generics.ListCreateAPIView):
    """List posts (``?mine=true``: only the caller's), or create one owned by the caller (``Idempotency-Key``)."""

    serializer_class = PostProtoSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        mine = self.request.query_params.get("mine", "").lower() in TRUE_VALUES
        user = self.request.user
        # IsAuthenticated has let only users in.
        return post_list(owner=user if mine and isinstance(user, User) else None)

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)


class PostDetailView(ETagViewMixin, generics.RetrieveUpdateDestroyAPIView):
    """Read, change or delete a post; ``ETag`` on responses, ``If-Match`` on writes (412 if stale)."""

    serializer_class = PostProtoSerializer
    permission_classes = [IsAuthenticated, RestIsOwnerOrStaff]

    def get_queryset(self):
        return post_list()
