"""Traces of the web process, which its WSGI/ASGI module turns on.

The public names of ``grpc_ext.server.tracing``, kept at ``grpc_ext.tracing`` where a project imports them.
"""

from grpc_ext.server.tracing import configure_web_tracing

__all__ = ["configure_web_tracing"]
