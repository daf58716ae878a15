"""Connect and gRPC-Web calls in front of a WSGI application.

The public names of ``grpc_ext.gateway.connect``, kept at ``grpc_ext.connect`` where a project imports them.
"""

from grpc_ext.gateway.connect import with_connect

__all__ = ["with_connect"]
