"""Permissions on posts for gRPC and REST, each a thin wrapper around ``posts.rules``."""

from __future__ import annotations

from rest_framework import permissions as drf_permissions

from grpc_ext.permissions import READ_ACTIONS, BasePermission
from posts.rules import can_edit_post

NOT_OWNER = "Only the post's owner or staff may change or delete it."


class IsOwnerOrStaff(BasePermission):
    """gRPC: let any caller read a post; only its owner or staff change or delete it."""

    message = NOT_OWNER

    def has_object_permission(self, service, obj) -> bool:
        return service.action in READ_ACTIONS or can_edit_post(service.user, obj)


class RestIsOwnerOrStaff(drf_permissions.BasePermission):
    """REST: let any caller read a post; only its owner or staff change or delete it."""

    message = NOT_OWNER

    def has_object_permission(self, request, view, obj) -> bool:
        return request.method in drf_permissions.SAFE_METHODS or can_edit_post(request.user, obj)
