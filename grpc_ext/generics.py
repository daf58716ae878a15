"""The service classes a project subclasses (``ModelService``, ``GenericService``, ``Service``).

The public names of ``grpc_ext.services.generics``, kept at ``grpc_ext.generics`` where a project imports them.
"""

from grpc_ext.services.generics import GenericService, ModelService, RequestCycle, Service

__all__ = ["GenericService", "ModelService", "RequestCycle", "Service"]
