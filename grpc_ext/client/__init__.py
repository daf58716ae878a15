"""A Python client of the project's gRPC services, and its grpc.aio twin.

Every production caller needs the same things around raw stubs: the access
token in metadata and refreshed before it expires, a deadline on each call,
retries of transient failures on reads, ``page_token`` walking, field masks,
and the ``google.rpc.BadRequest`` in the trailers. ``Client`` and
``AsyncClient`` do them once, for every service the generated modules define::

    with Client("127.0.0.1:50051", timeout=5.0) as client:
        client.login("ada@example.com", "demo-password-123")
        post = client.posts.Create(title="Hello")
        for post in client.posts.iterate(owner="me"):
            ...

``client.<label>`` is the service of the proto package ``<label>`` (the app's
label for a generated proto); its attributes are the RPC names, called with
the request's fields as keywords. Nothing here is specific to an app: a new
app's generated proto shows up as ``client.<its label>`` with no client code.
Django is not needed: the client only imports the generated modules.

The package: ``_base`` (the services the generated modules define, requests
built from keywords, channel options, tokens), ``_sync`` (``Client``), ``_aio``
(``AsyncClient``), ``errors`` (``ClientError``) and ``tracing`` (CLIENT spans).
"""

from grpc_ext.client._aio import AsyncClient, AsyncServiceClient
from grpc_ext.client._base import (
    DEFAULT_TIMEOUT,
    KEEPALIVE_OPTIONS,
    READ_METHODS,
    RETRY_POLICY,
    MethodCaller,
    RpcMethod,
    ServiceSpec,
    discover_services,
)
from grpc_ext.client._sync import Client, ServiceClient
from grpc_ext.client.errors import ClientError

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEEPALIVE_OPTIONS",
    "READ_METHODS",
    "RETRY_POLICY",
    "AsyncClient",
    "AsyncServiceClient",
    "Client",
    "ClientError",
    "MethodCaller",
    "RpcMethod",
    "ServiceClient",
    "ServiceSpec",
    "discover_services",
]
