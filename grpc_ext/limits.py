"""The base of an interceptor that observes every call (how the access log and the metrics are built).

The public names of ``grpc_ext.server.limits``, kept at ``grpc_ext.limits`` where a project imports them.
"""

from grpc_ext.server.limits import ObservingInterceptor, outcome_code, wrap_handler

__all__ = ["ObservingInterceptor", "outcome_code", "wrap_handler"]
