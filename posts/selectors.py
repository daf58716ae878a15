"""Reads on posts."""

from __future__ import annotations

from django.db.models import QuerySet

from posts.models import Post
from users.models import User


def post_list(*, owner: User | None = None) -> QuerySet[Post]:
    """Return every post, newest first; only ``owner``'s when given."""
    queryset = Post.objects.all()
    if owner is not None:
        queryset = queryset.filter(owner=owner)
    return queryset
