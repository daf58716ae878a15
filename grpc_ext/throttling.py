"""The rate throttle a project's throttles subclass.

The public names of ``grpc_ext.services.throttling``, kept at ``grpc_ext.throttling`` where a project imports them.
"""

from grpc_ext.services.throttling import ClientRateThrottle

__all__ = ["ClientRateThrottle"]
