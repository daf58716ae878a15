"""Who may do what to a user: one rule, checked by the gRPC and REST permissions alike."""

from __future__ import annotations

from users.models import User


def can_edit_user(actor: User, user: User) -> bool:
    """Let a user change or delete their own account, and staff anyone's."""
    return actor.is_staff or actor.pk == user.pk
