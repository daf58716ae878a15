"""The DRF baseline: a plain ModelSerializer and generic views over Post.

Callers authenticate as on the project's REST API and gRPC services: a
simplejwt access token, checked by ``JWTAuthentication``, and
``IsAuthenticated``. Otherwise independent of the project's REST perimeter
(no object permissions), so that it measures what DRF itself costs per
worker for the same rows.
"""

from __future__ import annotations

from rest_framework import generics, serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework_simplejwt.authentication import JWTAuthentication

from posts.models import Post


class PostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Post
        fields = ["id", "owner", "title", "description", "created", "updated"]
        read_only_fields = ["id", "created", "updated"]


class PostPagination(LimitOffsetPagination):
    """``?limit=1000`` pages like the gRPC List; ``?limit=100000`` is the export."""

    default_limit = 50
    max_limit = 100_000


class PostListCreate(generics.ListCreateAPIView):
    queryset = Post.objects.all()
    serializer_class = PostSerializer
    permission_classes = [IsAuthenticated]
    authentication_classes = [JWTAuthentication]
    pagination_class = PostPagination


class PostRetrieve(generics.RetrieveAPIView):
    queryset = Post.objects.all()
    serializer_class = PostSerializer
    permission_classes = [IsAuthenticated]
    authentication_classes = [JWTAuthentication]
