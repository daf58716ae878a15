"""Posts, each owned by a user."""

import uuid

from django.conf import settings
from django.db import models

from grpc_ext.models import ETagModel


class Post(ETagModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts")
    title = models.CharField(max_length=100)
    # Bounded so that a page of posts stays far below the gRPC message size limit.
    description = models.TextField(blank=True, default="", max_length=10_000)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["owner", "-created"], name="post_owner_created_idx")]

    def __str__(self) -> str:
        return self.title
