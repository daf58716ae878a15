"""What a project's REST views (Django REST framework) take for idempotent creates and etags.

The public names of ``grpc_ext.gateway.rest``, kept at ``grpc_ext.rest`` where a project imports them.
"""

from grpc_ext.gateway.rest import (
    ETagViewMixin,
    IdempotentCreateMixin,
    UncountedRetriesMixin,
    idempotent_response,
    with_etag,
)

__all__ = ["ETagViewMixin", "IdempotentCreateMixin", "UncountedRetriesMixin", "idempotent_response", "with_etag"]
