"""Writes on users: every transport (gRPC, REST, admin) calls these."""

from __future__ import annotations

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import transaction

from users.models import User


def _validate_password(password: str, user: User) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None


@transaction.atomic
def user_create(*, email: str, password: str, **extra_fields) -> User:
    """Create a user after checking the email and the password validators."""
    user = User(email=User.objects.normalize_email(email), **extra_fields)
    user.full_clean(exclude=["password"])
    _validate_password(password, user)
    user.set_password(password)
    user.save()
    return user


@transaction.atomic
def user_update(*, user: User, password: str | None = None, **fields) -> User:
    """Change the given fields of ``user``; a password is validated and hashed."""
    for name, value in fields.items():
        setattr(user, name, value)
    user.full_clean(exclude=["password"])
    if password is not None:
        _validate_password(password, user)
        user.set_password(password)
    user.save()
    return user
