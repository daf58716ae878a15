"""Reads on users."""

from django.db.models import QuerySet

from users.models import User


def user_list() -> QuerySet[User]:
    """Return every user, newest first."""
    return User.objects.all()
