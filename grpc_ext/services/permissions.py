"""Permission checks of gRPC calls, in DRF's shape.

``has_permission(service)`` runs before the handler; ``has_object_permission(
service, obj)`` when the handler looks an object up (``get_object``). The
service exposes ``user``, ``auth``, ``action``, ``request`` and ``context``.
Rules about the domain are plain functions in the apps, so the DRF permission
of the REST API and the gRPC permission call the same rule.
"""

from __future__ import annotations

#: Actions that only read, the gRPC counterpart of DRF's ``SAFE_METHODS``.
READ_ACTIONS = frozenset({"List", "Stream", "Retrieve"})


class BasePermission:
    """Allow everything; override one or both checks."""

    message: str | None = None

    def has_permission(self, service) -> bool:
        return True

    def has_object_permission(self, service, obj) -> bool:
        return True


class AllowAny(BasePermission):
    pass


class IsAuthenticated(BasePermission):
    def has_permission(self, service) -> bool:
        return bool(service.user and service.user.is_authenticated)
