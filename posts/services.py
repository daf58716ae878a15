"""Writes on posts: every transport (gRPC, REST, admin) calls these.

They take the model's fields as the transport validated them (``**fields``),
so a field added to the model and its serializer needs no change here; the
rules (ownership, ``full_clean``) stay in one place.
"""

from __future__ import annotations

from typing import Any

from grpc_ext.bulk import insert_many
from posts.models import Post
from users.models import User

#: Not checked by a query: the owner is an instance the caller already holds, and the key a
#: fresh UUID4 whose uniqueness the insert's primary key constraint guards.
NOT_REVALIDATED = ["owner", "id"]


def _validated(post: Post) -> Post:
    post.full_clean(exclude=NOT_REVALIDATED)
    return post


# No transaction of their own: each validates without a query, then writes one statement,
# atomic by itself. Inside a caller's transaction an atomic block would add a savepoint
# (two round trips), and savepoint=False would leave the caller's transaction unusable
# after a validation error.
def post_create(*, owner: User, **fields: Any) -> Post:
    """Create a post owned by ``owner`` after validating its fields."""
    post = _validated(Post(owner=owner, **fields))
    post.save(force_insert=True)
    return post


def post_create_many(*, items: list[dict[str, Any]]) -> list[Post]:
    """Create posts (each the fields of ``post_create``, owner included) in one statement, all or none.

    Every post is validated first; an invalid one raises ``ValidationError``
    and nothing is written.
    """
    return insert_many([_validated(Post(**item)) for item in items])


def post_update(post: Post, **fields: Any) -> Post:
    """Change the given fields of ``post`` after validating them."""
    for name, value in fields.items():
        setattr(post, name, value)
    _validated(post)
    post.save()
    return post
