"""Method handlers rebuilt around a new behaviour, of the same kind: the one walk over grpc's four kinds.

A ``grpc.RpcMethodHandler`` holds its behaviour in one of four attributes
(``unary_unary``, ``unary_stream``, ``stream_unary``, ``stream_stream``);
every layer that wraps behaviours (the drain gate, the observers, tracing,
the decode guard) goes through ``rebuild`` instead of walking them itself.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

#: Each kind of method: the handler's attribute that holds its behaviour, and grpc's constructor of that kind.
KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def rebuild(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[str, Callable], Callable],
    request_deserializer: Callable | None = None,
) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its behaviour ``wrap(kind, behaviour)``, of the same kind and response serializer.

    ``kind`` is the attribute's name (``"unary_stream"``...). With
    ``request_deserializer`` the new handler decodes requests with it. When
    ``wrap`` returns the behaviour itself, ``handler`` is returned unchanged.
    """
    for kind, make in KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            wrapped = wrap(kind, behavior)
            if wrapped is behavior:
                return handler
            return make(wrapped, request_deserializer or handler.request_deserializer, handler.response_serializer)
    return handler
