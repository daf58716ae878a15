"""gRPC permissions on users, around the rule in ``users.rules``."""

from __future__ import annotations

from grpc_ext.permissions import READ_ACTIONS, BasePermission
from users.rules import can_edit_user


class IsSelfOrStaff(BasePermission):
    """Let any caller read a user; only the user themself or staff change or delete it."""

    message = "You may change or delete only your own account."

    def has_object_permission(self, service, obj) -> bool:
        return service.action in READ_ACTIONS or can_edit_user(service.user, obj)
