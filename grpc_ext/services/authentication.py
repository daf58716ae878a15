"""Authentication of gRPC calls from their metadata, in DRF's shape.

A service lists ``authentication_classes``; each one's ``authenticate(service)``
returns ``(user, auth)``, or ``None`` when the call carries no credentials it
understands, and raises ``AuthenticationFailed`` when they are bad.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model
from django.db.models.base import ModelState
from rest_framework import HTTP_HEADER_ENCODING
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from grpc_ext.settings import grpc_ext_settings


def get_metadata(context, key: str) -> str | None:
    """Return the first value of the invocation metadata ``key`` (keys are lower case)."""
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return item.value
    return None


class BaseAuthentication:
    """Identify the caller of an RPC. Override ``authenticate``."""

    def authenticate(self, service) -> tuple[Any, Any] | None:
        raise NotImplementedError(f"{type(self).__name__} must implement .authenticate(service).")


class TokenCache:
    """Validated access tokens by their raw bytes, until ``AUTH_CACHE_TTL`` seconds or their expiry.

    Decoding and checking a JWT's signature costs about as much as a
    Retrieve's query. A token's bytes always validate the same way until it
    expires, so the result is kept; tokens that can be blacklisted (checked
    in the database) are never cached.
    """

    max_entries = 10_000

    def __init__(self) -> None:
        self._tokens: dict[bytes, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, raw_token: bytes) -> Any | None:
        entry = self._tokens.get(raw_token)
        if entry is None or entry[0] < time.time():
            return None
        return entry[1]

    def set(self, raw_token: bytes, validated_token: Any, ttl: float) -> None:
        expires = validated_token.get("exp")
        deadline = min(time.time() + ttl, expires if isinstance(expires, int | float) else 0)
        with self._lock:
            if len(self._tokens) >= self.max_entries:
                self._tokens.clear()
            self._tokens[raw_token] = (deadline, validated_token)

    def clear(self) -> None:
        self._tokens.clear()


def tokens_are_cacheable() -> bool:
    """Tell whether no accepted token class is checked against the blacklist on each use."""
    return not any(hasattr(token_class, "check_blacklist") for token_class in jwt_settings.AUTH_TOKEN_CLASSES)


class UserCache:
    """Users by id for ``AUTH_CACHE_TTL`` seconds, in this process only.

    simplejwt reads the user from the database on every call, which costs as
    much as the query of a Retrieve. Here a user found active is kept for a
    few seconds. Saving or deleting a user drops it at once in the process
    that saved it (``post_save``/``post_delete``); other processes, and
    writes that bypass signals (``QuerySet.update``), are seen within the TTL.
    """

    max_entries = 10_000

    def __init__(self) -> None:
        self._users: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> Any | None:
        """Return a copy of the cached user (handlers may change it), or ``None`` if absent or expired."""
        entry = self._users.get(user_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return shallow_copy(entry[1])

    def set(self, user_id: str, user: Any, ttl: float) -> None:
        with self._lock:
            if len(self._users) >= self.max_entries:
                self._users.clear()
            self._users[user_id] = (time.monotonic() + ttl, shallow_copy(user))

    def discard(self, user_id: str) -> None:
        self._users.pop(user_id, None)

    def clear(self) -> None:
        self._users.clear()


def shallow_copy(instance: Model) -> Model:
    """Return a copy of a model instance with its own state and no cached relations (cheaper than ``copy``)."""
    clone = instance.__class__.__new__(instance.__class__)
    clone.__dict__.update(instance.__dict__)
    clone._state = ModelState()
    clone._state.db, clone._state.adding = instance._state.db, False
    return clone


token_cache = TokenCache()
user_cache = UserCache()


def forget_cached_user(sender, instance, **kwargs) -> None:
    """Drop a saved or deleted user from the cache (connected in ``GrpcExtConfig.ready``)."""
    user_cache.discard(str(instance.pk))


class UserCheckingJWTAuthentication(SimpleJWTAuthentication):
    """simplejwt's authentication, refusing a well-signed token whose user id is not a key as a bad token.

    simplejwt looks the id up as it is, so an id that is not a UUID raises
    a validation error (INVALID_ARGUMENT, or a 500 over REST) instead of
    UNAUTHENTICATED. The REST API uses this class too.
    """

    def get_user(self, validated_token) -> Any:
        try:
            return super().get_user(validated_token)
        except (ValidationError, ValueError, TypeError, OverflowError):
            raise InvalidToken("Token contained no recognizable user identification.") from None


@functools.cache
def simplejwt_authentication() -> UserCheckingJWTAuthentication:
    """Return the one simplejwt authenticator every call shares: it keeps no state but the user model."""
    return UserCheckingJWTAuthentication()


class JWTAuthentication(BaseAuthentication):
    """Accept ``authorization: Bearer <access token>`` metadata, checked by simplejwt.

    The token is validated exactly as the REST API validates it (signature,
    expiry, token type, active user), by simplejwt's own ``JWTAuthentication``;
    a token validated, and the user it names read, less than ``AUTH_CACHE_TTL``
    seconds ago come from ``token_cache`` and ``user_cache`` (0 turns them off).
    """

    metadata_key = "authorization"

    def __init__(self) -> None:
        self.jwt = simplejwt_authentication()

    def authenticate(self, service) -> tuple[Any, Any] | None:
        header = get_metadata(service.context, self.metadata_key)
        if header is None:
            return None
        raw_token = self.jwt.get_raw_token(header.encode(HTTP_HEADER_ENCODING))
        if raw_token is None:
            return None
        validated_token = self.get_validated_token(raw_token)
        return self.get_user(validated_token), validated_token

    def get_validated_token(self, raw_token: bytes) -> Any:
        """Return the validated token: cached, or checked (signature, expiry, type) by simplejwt."""
        ttl = grpc_ext_settings.AUTH_CACHE_TTL
        if not ttl or not tokens_are_cacheable():
            return self.jwt.get_validated_token(raw_token)
        validated_token = token_cache.get(raw_token)
        if validated_token is None:
            validated_token = self.jwt.get_validated_token(raw_token)
            token_cache.set(raw_token, validated_token, ttl)
        return validated_token

    def get_user(self, validated_token) -> Any:
        """Return the token's user: cached, or read and checked (exists, active) by simplejwt."""
        ttl = grpc_ext_settings.AUTH_CACHE_TTL
        # A token revoked by a password change is checked against the user of each call.
        if not ttl or jwt_settings.CHECK_REVOKE_TOKEN:
            return self.jwt.get_user(validated_token)
        user_id = str(validated_token.get(jwt_settings.USER_ID_CLAIM))
        user = user_cache.get(user_id)
        if user is None:
            user = self.jwt.get_user(validated_token)
            user_cache.set(user_id, user, ttl)
        return user
