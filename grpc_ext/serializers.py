"""The serializer a project's messages are declared with (``ModelProtoSerializer``).

The public names of ``grpc_ext.wire.serializers``, kept at ``grpc_ext.serializers`` where a project imports them.
"""

from grpc_ext.wire.serializers import ListProtoSerializer, ModelProtoSerializer

__all__ = ["ListProtoSerializer", "ModelProtoSerializer"]
