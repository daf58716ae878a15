"""Reads on users."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from users.models import User
from users.rules import visible_users


def user_list(*, viewer: User | AnonymousUser | None = None) -> QuerySet[User]:
    """Return every user ``viewer`` may see (every user when no viewer is given), newest first."""
    queryset = User.objects.all()
    if viewer is not None:
        queryset = queryset.filter(visible_users(viewer))
    return queryset
