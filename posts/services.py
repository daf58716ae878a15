"""Writes on posts: every transport (gRPC, REST, admin) calls these."""

from __future__ import annotations

from django.db import transaction

from posts.models import Post
from users.models import User


@transaction.atomic
def post_create(*, owner: User, title: str, description: str = "") -> Post:
    """Create a post owned by ``owner`` after validating its fields."""
    post = Post(owner=owner, title=title, description=description)
    post.full_clean()
    post.save()
    return post


@transaction.atomic
def post_update(*, post: Post, **fields) -> Post:
    """Change the given fields of ``post`` after validating them."""
    for name, value in fields.items():
        setattr(post, name, value)
    post.full_clean()
    post.save()
    return post
