"""The permission classes a service names.

The public names of ``grpc_ext.services.permissions``, kept at ``grpc_ext.permissions`` where a project imports them.
"""

from grpc_ext.services.permissions import READ_ACTIONS, AllowAny, BasePermission, IsAuthenticated

__all__ = ["AllowAny", "BasePermission", "IsAuthenticated", "READ_ACTIONS"]
