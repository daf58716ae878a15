"""Who may do what to a user: one rule each, checked by the gRPC and REST permissions alike."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q

from users.models import User


def can_edit_user(actor: User, user: User) -> bool:
    """Let a user change or delete their own account, and staff anyone's."""
    return actor.is_staff or actor.pk == user.pk


def visible_users(viewer: User | AnonymousUser) -> Q:
    """Return the accounts ``viewer`` may read: staff every one; anyone else active, unprivileged ones and their own.

    So a caller who is not staff cannot find out which accounts are staff,
    superusers or deactivated: to them those accounts do not exist (NOT_FOUND),
    and every ``is_staff``, ``is_superuser`` and ``is_active`` they read is true
    of the account.
    """
    if viewer.is_staff:
        return Q()
    return Q(is_active=True, is_staff=False, is_superuser=False) | Q(pk=viewer.pk)
