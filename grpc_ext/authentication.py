"""Authentication of gRPC calls from their metadata, in DRF's shape.

A service lists ``authentication_classes``; each one's ``authenticate(service)``
returns ``(user, auth)``, or ``None`` when the call carries no credentials it
understands, and raises ``AuthenticationFailed`` when they are bad.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from rest_framework import HTTP_HEADER_ENCODING
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
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


class UserCache:
    """Users by id for ``AUTH_USER_CACHE_TTL`` seconds, in this process only.

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
        return copy.copy(entry[1])

    def set(self, user_id: str, user: Any, ttl: float) -> None:
        with self._lock:
            if len(self._users) >= self.max_entries:
                self._users.clear()
            self._users[user_id] = (time.monotonic() + ttl, copy.copy(user))

    def discard(self, user_id: str) -> None:
        self._users.pop(user_id, None)

    def clear(self) -> None:
        self._users.clear()


user_cache = UserCache()


def forget_cached_user(sender, instance, **kwargs) -> None:
    """Drop a saved or deleted user from the cache (connected in ``GrpcExtConfig.ready``)."""
    user_cache.discard(str(instance.pk))


class JWTAuthentication(BaseAuthentication):
    """Accept ``authorization: Bearer <access token>`` metadata, checked by simplejwt.

    The token is validated exactly as the REST API validates it (signature,
    expiry, token type, active user), by simplejwt's own ``JWTAuthentication``;
    the user it names comes from ``user_cache`` when it was read less than
    ``AUTH_USER_CACHE_TTL`` seconds ago (0 turns the cache off).
    """

    metadata_key = "authorization"

    def __init__(self) -> None:
        self.jwt = SimpleJWTAuthentication()

    def authenticate(self, service) -> tuple[Any, Any] | None:
        header = get_metadata(service.context, self.metadata_key)
        if header is None:
            return None
        raw_token = self.jwt.get_raw_token(header.encode(HTTP_HEADER_ENCODING))
        if raw_token is None:
            return None
        validated_token = self.jwt.get_validated_token(raw_token)
        return self.get_user(validated_token), validated_token

    def get_user(self, validated_token) -> Any:
        """Return the token's user: cached, or read and checked (exists, active) by simplejwt."""
        ttl = grpc_ext_settings.AUTH_USER_CACHE_TTL
        # A token revoked by a password change is checked against the user of each call.
        if not ttl or jwt_settings.CHECK_REVOKE_TOKEN:
            return self.jwt.get_user(validated_token)
        user_id = str(validated_token.get(jwt_settings.USER_ID_CLAIM))
        user = user_cache.get(user_id)
        if user is None:
            user = self.jwt.get_user(validated_token)
            user_cache.set(user_id, user, ttl)
        return user
