"""Authentication of gRPC calls from their metadata, in DRF's shape.

A service lists ``authentication_classes``; each one's ``authenticate(service)``
returns ``(user, auth)``, or ``None`` when the call carries no credentials it
understands, and raises ``AuthenticationFailed`` when they are bad.
"""

from __future__ import annotations

from typing import Any

from rest_framework import HTTP_HEADER_ENCODING
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication


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


class JWTAuthentication(BaseAuthentication):
    """Accept ``authorization: Bearer <access token>`` metadata, checked by simplejwt.

    The token is validated exactly as the REST API validates it (signature,
    expiry, token type, active user), by simplejwt's own ``JWTAuthentication``.
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
        return self.jwt.get_user(validated_token), validated_token
