"""Server reflection under both names clients ask for: ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection ships only v1alpha, while grpcurl, buf curl and Postman ask
for v1 first. The two protocols are wire-identical (v1 is v1alpha with the
package renamed), so one servicer answers both; v1's descriptor is v1alpha's
with the package renamed, added to the default pool so that reflection can
describe the v1 service itself.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
METHOD = "ServerReflectionInfo"


def ensure_v1_descriptor() -> None:
    """Add v1's file descriptor to the default pool, unless something (a later grpcio-reflection) already did."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    v1.name, v1.package = V1_FILE_NAME, V1_PACKAGE
    v1.options.Clear()
    old_prefix, new_prefix = f".{reflection_pb2.DESCRIPTOR.package}.", f".{V1_PACKAGE}."
    for message in v1.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name.removeprefix(old_prefix)
    for service in v1.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type.removeprefix(old_prefix)
            method.output_type = new_prefix + method.output_type.removeprefix(old_prefix)
    pool.AddSerializedFile(v1.SerializeToString())


def v1_handler(servicer: reflection_pb2_grpc.ServerReflectionServicer) -> grpc.GenericRpcHandler:
    """Serve ``servicer`` (sync or ``grpc.aio``) under the v1 name, with v1alpha's wire-identical messages."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {METHOD: handler})


def enable_server_reflection(service_names: list[str], server, *, servicer_class=None) -> list[str]:
    """Serve reflection for ``service_names`` (plus both reflection services) under v1 and v1alpha.

    ``servicer_class`` is grpcio-reflection's ``grpc.aio`` servicer unless
    given (its synchronous one for a ``grpc.server``). Return the names
    reflection lists.
    """
    ensure_v1_descriptor()
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    servicer = (servicer_class or reflection.aio.ReflectionServicer)(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((v1_handler(servicer),))
    return names
