"""Build rows through the domain services, as every transport does."""

from __future__ import annotations

import itertools

from posts.models import Post
from posts.services import post_create
from users.models import User
from users.services import user_create

PASSWORD = "correct-horse-battery-9"
_sequence = itertools.count(1)


def make_user(**fields) -> User:
    fields.setdefault("email", f"user{next(_sequence)}@example.com")
    fields.setdefault("password", PASSWORD)
    return user_create(**fields)


def make_post(*, owner: User | None = None, **fields) -> Post:
    fields.setdefault("title", f"Post {next(_sequence)}")
    return post_create(owner=owner or make_user(), **fields)
