"""Writes on posts: every transport (gRPC, REST, admin) calls these.

They take the model's fields as the transport validated them (``**fields``),
so a field added to the model and its serializer needs no change here; the
rules (ownership, ``full_clean``) stay in one place.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.db import transaction

from grpc_ext.bulk import has_model_rules, insert_many, new_instances, validate_each
from posts.models import Post
from users.models import User

#: Not checked by a query: the owner is an instance the caller already holds, and the key a
#: fresh UUID4 whose uniqueness the insert's primary key constraint guards.
NOT_REVALIDATED = ["owner", "id"]


def _validated(post: Post) -> Post:
    post.full_clean(exclude=NOT_REVALIDATED)
    return post


# No transaction of their own: each validates without a query, then writes one statement,
# atomic by itself, and says so (@transaction.non_atomic_requests, as a Django view opts out of
# ATOMIC_REQUESTS): the RPC handler then opens none around it either, and a Create is one
# round trip (grpc_ext.services.mixins.write_transaction). Inside a caller's transaction an atomic block
# would add a savepoint (two round trips), and savepoint=False would leave the caller's
# transaction unusable after a validation error. A service that comes to write twice drops
# the marker or wraps its writes in transaction.atomic, as users.services does.
@transaction.non_atomic_requests
def post_create(*, owner: User, **fields: Any) -> Post:
    """Create a post owned by ``owner`` after validating its fields."""
    post = _validated(Post(owner=owner, **fields))
    post.save(force_insert=True)
    return post


def post_create_many(*, items: list[dict[str, Any]], checked_fields: Collection[str] = ()) -> list[Post]:
    """Create posts (each the fields of ``post_create``, owner included) in one statement, all or none.

    Every post is validated first; an invalid one raises ``ItemValidationError``
    (its position in ``items``) and nothing is written. ``checked_fields`` name
    fields the caller has already run through the model field's own checks (a
    ``ModelProtoSerializer``'s ``model_checked_fields``): they are not checked
    twice. When that leaves no field of the items and the model has no rule of
    its own (``clean()``, unique fields, constraints), ``full_clean`` would
    only repeat the caller's checks and is skipped; the other values (key,
    owner, defaults) are the server's, which ``full_clean`` of ``post_create``
    excludes or a ModelForm would not check either.
    """
    posts = new_instances(Post, items)
    exclude = {*NOT_REVALIDATED, *checked_fields}
    client_fields = set().union(*items) if items else set()
    if has_model_rules(Post) or not client_fields <= exclude:
        validate_each(posts, lambda post: post.full_clean(exclude=exclude))
    return insert_many(posts)


@transaction.non_atomic_requests
def post_update(post: Post, **fields: Any) -> Post:
    """Change the given fields of ``post`` after validating them."""
    for name, value in fields.items():
        setattr(post, name, value)
    _validated(post)
    post.save()
    return post
