"""Who may do what to a post: one rule, checked by the gRPC and REST permissions alike."""

from __future__ import annotations

from posts.models import Post
from users.models import User


def can_edit_post(user: User, post: Post) -> bool:
    """Let the owner and staff change or delete a post."""
    return user.is_staff or post.owner_id == user.pk
