"""Writes on users and their sessions: every transport (gRPC, REST, admin) calls these.

They take the model's fields as the transport validated them (``**fields``):
a field added to the model and its serializer needs no change here.
"""

from __future__ import annotations

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.views.decorators.debug import sensitive_variables
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import (
    TokenBlacklistSerializer,
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token

from users.models import User


def _validate_password(password: str, user: User) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None


def _save(user: User) -> None:
    """Save ``user``; an email taken by a concurrent signup is the same error as one taken before."""
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise ValidationError({"email": [user.unique_error_message(User, ["email"])]}) from None


#: The answer to a well-signed token that names no user: the same as to any other bad token.
NO_ACCOUNT = TokenRefreshSerializer.default_error_messages["no_active_account"]


def token_names_a_user(token: Token) -> bool:
    """Tell whether the token's user id claim is the key of an existing user."""
    user_id = token.payload.get(jwt_settings.USER_ID_CLAIM)
    try:
        return user_id is not None and User.objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).exists()
    except (ValidationError, ValueError, TypeError):
        return False


class KnownUserRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's, refusing a well-signed token that names no user as a bad token (not a 400)."""

    def validate(self, attrs: dict) -> dict:
        if not token_names_a_user(self.token_class(attrs["refresh"])):
            raise InvalidToken(str(NO_ACCOUNT))
        return super().validate(attrs)


class KnownUserLogoutSerializer(TokenBlacklistSerializer):
    """Blacklist a refresh token only if it names a user: simplejwt would record any well-signed one."""

    def validate(self, attrs: dict) -> dict:
        if not token_names_a_user(self.token_class(attrs["refresh"])):
            raise InvalidToken(str(NO_ACCOUNT))
        return super().validate(attrs)


@transaction.non_atomic_requests  # atomic by itself: the RPC handler opens no transaction around it
@sensitive_variables("password")
@transaction.atomic
def user_create(*, email: str, password: str, **extra_fields) -> User:
    """Create a user after checking the email (case-insensitively unique) and the password validators."""
    user = User(email=User.objects.normalize_email(email), **extra_fields)
    user.full_clean(exclude=["password"])
    _validate_password(password, user)
    user.set_password(password)
    _save(user)
    return user


@transaction.non_atomic_requests  # atomic by itself: the RPC handler opens no transaction around it
@sensitive_variables("password")
@transaction.atomic
def user_update(user: User, *, password: str | None = None, **fields) -> User:
    """Change the given fields of ``user``; a password is validated and hashed."""
    if "email" in fields:
        fields["email"] = User.objects.normalize_email(fields["email"])
    for name, value in fields.items():
        setattr(user, name, value)
    user.full_clean(exclude=["password"])
    if password is not None:
        _validate_password(password, user)
        user.set_password(password)
    _save(user)
    return user


@sensitive_variables("password")
@transaction.atomic
def auth_login(*, email: str, password: str) -> dict[str, str]:
    """Return an access and a refresh token for an active user with these credentials.

    An unknown email, a wrong password and an inactive account give the same
    error, so a caller cannot learn which emails are registered.
    """
    serializer = TokenObtainPairSerializer(data={"email": email, "password": password})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@transaction.atomic
def auth_refresh(*, refresh: str) -> dict[str, str]:
    """Return a new access token and, as refresh tokens rotate, a new refresh token.

    The refresh token given is blacklisted, so it works once.
    """
    serializer = KnownUserRefreshSerializer(data={"refresh": refresh})
    try:
        serializer.is_valid(raise_exception=True)
    except TokenError as exc:
        raise InvalidToken(exc.args[0]) from exc
    except User.DoesNotExist as exc:  # deleted between the check and simplejwt's own read
        raise InvalidToken(str(NO_ACCOUNT)) from exc
    return dict(serializer.validated_data)


@transaction.atomic
def auth_logout(*, refresh: str) -> None:
    """Blacklist the refresh token; access tokens already issued expire on their own."""
    serializer = KnownUserLogoutSerializer(data={"refresh": refresh})
    try:
        serializer.is_valid(raise_exception=True)
    except TokenError as exc:
        raise InvalidToken(exc.args[0]) from exc
