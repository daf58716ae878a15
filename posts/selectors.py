"""Reads on posts."""

from django.db.models import QuerySet

from posts.models import Post


def post_list() -> QuerySet[Post]:
    """Return every post, newest first."""
    return Post.objects.all()
