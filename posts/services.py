"""Writes on posts: every transport (gRPC, REST, admin) calls these.

They take the model's fields as the transport validated them (``**fields``),
so a field added to the model and its serializer needs no change here; the
rules (ownership, ``full_clean``) stay in one place.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from posts.models import Post
from users.models import User


@transaction.atomic
def post_create(*, owner: User, **fields: Any) -> Post:
    """Create a post owned by ``owner`` after validating its fields."""
    post = Post(owner=owner, **fields)
    post.full_clean()
    post.save()
    return post


@transaction.atomic
def post_update(post: Post, **fields: Any) -> Post:
    """Change the given fields of ``post`` after validating them."""
    for name, value in fields.items():
        setattr(post, name, value)
    post.full_clean()
    post.save()
    return post
